// The dev origin (startOriginServer, as `resultity-snapshot serve` runs it) in its own process
// for the fleet benchmark, writing every 100 ms (or the slice given): requests answered in that
// slice by path kind, long-poll requests held, the most other requests in progress at once, and
// the process's resident memory.
//
// Started by fleet.ts, agents.ts and hold-cost.ts; not meant to be run by hand.
import { createWriteStream } from 'node:fs';

const { startOriginServer } = (await import(
  new URL('../../packages/snapshot/dist/origin/index.js', import.meta.url).href
)) as typeof import('../../packages/snapshot/src/origin/index.js');

const [dir, portText, maxHeldText, statsFile, sliceText] = process.argv.slice(2) as [string, string, string, string, string | undefined];
const sliceMs = Number(sliceText ?? 100);
const origin = await startOriginServer({ dir, maxHeldRequests: Number(maxHeldText) }, { host: '127.0.0.1', port: Number(portText) });
const stats = createWriteStream(statsFile);
let counts: Record<string, number> = {};
// Requests being answered that are not held long-polls (latest, envelopes, roots): what a burst costs the origin at once.
let inflight = 0;
let inflightMax = 0;
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
  if (kind !== 'wait') {
    inflight += 1;
    inflightMax = Math.max(inflightMax, inflight);
  }
  // Counted when answered, as nginx logs a request (a held long-poll counts when it is answered).
  res.once('finish', () => {
    counts[kind] = (counts[kind] ?? 0) + 1;
  });
  if (kind !== 'wait') res.once('close', () => (inflight -= 1));
});
setInterval(() => {
  stats.write(`${JSON.stringify({ t: Date.now(), held: origin.heldRequests(), inflight_max: inflightMax, rss: process.memoryUsage().rss, counts })}\n`);
  counts = {};
  inflightMax = inflight;
}, sliceMs);
process.send?.({ kind: 'listening', url: origin.url });
process.on('SIGTERM', () => void origin.close().finally(() => process.exit(0)));
