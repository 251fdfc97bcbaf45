// A runtime stand-in for the fleet benchmark: one process holding a real runtime-bridge
// connection (the library a runtime embeds) to each Agent named on the command line by its
// state directory. The library ACKs every environment once its listeners have run.
//
//   node --import tsx bench/fleet/runtime-standin.ts STATE_DIR...
import { join } from 'node:path';

const bridge = (await import(
  new URL('../../apps/runtime-bridge/dist/index.js', import.meta.url).href
)) as typeof import('../../apps/runtime-bridge/src/index.js');

const stateDirs = process.argv.slice(2);
const bridges = await Promise.all(
  stateDirs.map((dir, i) =>
    bridge.connect({
      url: join(dir, 'run', 'bridge.sock'),
      tokenFile: join(dir, 'run', 'bridge.token'),
      runtimeId: `standin-${i}`,
      connectTimeoutMs: 60_000,
    }),
  ),
);
console.log(`connected ${bridges.length}`);
process.on('SIGTERM', () => {
  void Promise.all(bridges.map((b) => b.close())).finally(() => process.exit(0));
});
