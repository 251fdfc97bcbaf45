// One chunked model download by @resultity/applier in a process of its own, so its peak RSS
// (VmHWM) is its own and it can be killed with SIGKILL. argv[2]: JSON of { model, root, origin,
// network, connections, maxBytesPerSecond?, progress?, fsync? (default true), applier? (another
// build's dist/index.js, for an A/B) }. Prints `progress <bytes>` lines when
// asked, then one JSON line { seconds, cpuSeconds (every thread of the process, from before fetchModel to after), peakRssMiB, mirrors }.
import { readFileSync } from 'node:fs';

const input = JSON.parse(process.argv[2]);
const { FsModelStore, HttpDownloader, OriginChunkLists, fetchModel, systemClock } = await import(
  input.applier ?? new URL('../../packages/applier/dist/index.js', import.meta.url).href
);
const store = new FsModelStore(input.root, { fsync: input.fsync !== false });
const downloader = new HttpDownloader({ allowPrivateAddresses: true, ...(input.maxBytesPerSecond ? { maxBytesPerSecond: input.maxBytesPerSecond } : {}) });
const chunks = { lists: new OriginChunkLists(input.origin, input.network, downloader), staging: store, connections: input.connections };
let last;
const t0 = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
await fetchModel(
  input.model,
  { models: store, downloader, clock: systemClock, chunks },
  {
    onProgress: (done, _total, detail) => {
      last = detail;
      if (input.progress) process.stdout.write(`progress ${done}\n`);
    },
  },
);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
process.stdout.write(
  `${JSON.stringify({ seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, userSeconds: cpu.user / 1e6, systemSeconds: cpu.system / 1e6, peakRssMiB: hwm / 1024, mirrors: last?.mirrors ?? [] })}\n`,
);
