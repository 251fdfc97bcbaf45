// The dev origin (startOriginServer, as `resultity-snapshot serve` runs it) in its own process
// for the fleet benchmark, writing every 100 ms: requests answered in that slice by path kind,
// long-poll requests held, and the process's resident memory.
//
// Started by fleet.ts; not meant to be run by hand.
import { createWriteStream } from 'node:fs';

const { startOriginServer } = (await import(
  new URL('../../packages/snapshot/dist/origin/index.js', import.meta.url).href
)) as typeof import('../../packages/snapshot/src/origin/index.js');

const [dir, portText, maxHeldText, statsFile] = process.argv.slice(2) as [string, string, string, string];
const origin = await startOriginServer({ dir, maxHeldRequests: Number(maxHeldText) }, { host: '127.0.0.1', port: Number(portText) });
const stats = createWriteStream(statsFile);
let counts: Record<string, number> = {};
origin.server.on('request', (req, res) => {
  const url = req.url ?? '';
  const kind = url.includes('wait=')
    ? 'wait'
    : url.includes('latest.json')
      ? 'latest'
      : url.includes('/snapshots/')
        ? 'snapshot'
        : url.includes('/root/')
          ? 'root'
          : 'other';
  // Counted when answered, as nginx logs a request (a held long-poll counts when it is answered).
  res.once('finish', () => {
    counts[kind] = (counts[kind] ?? 0) + 1;
  });
});
setInterval(() => {
  stats.write(`${JSON.stringify({ t: Date.now(), held: origin.heldRequests(), rss: process.memoryUsage().rss, counts })}\n`);
  counts = {};
}, 100);
process.send?.({ kind: 'listening', url: origin.url });
process.on('SIGTERM', () => void origin.close().finally(() => process.exit(0)));
