// Chunked model download of @resultity/applier (ranged requests over every mirror, each chunk
// verified, fdatasync + journal, whole-file sha256) next to bare curl and aria2c with the same
// number of connections, all from nginx on 127.0.0.1.
// Usage: node bench/applier/chunked.mjs [sizeMiB=1024] [runs=3] [scenarios=main,limited,resume,bad] [connections=8] [chunkMiB=64]
// Scenario `ab` (not in the default set) runs only ours, run by run against another build of the
// applier: `APPLIER_BASELINE=<path of its dist/index.js>` (e.g. a copy of dist made before a change).
// `APPLIER=<path of a dist/index.js>` makes every scenario run that build as ours. With
// `AB_DISK_BUSY=1`, `ab` runs a 4 GiB dd (fdatasync) into the same disk during each of its runs.
// Needs `pnpm --filter @resultity/applier build`, nginx, curl and aria2c. Scratch: bench/.work/applier-chunked.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, open, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildChunkList } from '../../packages/snapshot/dist/index.js';
import { aria2c, curl, curlRanges, median, settle, startNginx } from './references.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, '..', '.work', 'applier-chunked');
const sizeMiB = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 3);
const scenarios = new Set((process.argv[4] ?? 'main,limited,resume,bad').split(','));
const connections = Number(process.argv[5] ?? 8);
const chunkSize = Number(process.argv[6] ?? 64) * 2 ** 20;
const MiB = 2 ** 20;
const NETWORK = 'bench';

/** The model file, its sha256, and its chunk list written where an origin serves it. */
async function ensureModel(root, mib) {
  const file = join(root, `model-${mib}m.bin`);
  const meta = `${file}.json`;
  if (!existsSync(file) || !existsSync(meta) || JSON.parse(readFileSync(meta, 'utf8')).chunkSize !== chunkSize) {
    const out = createWriteStream(file);
    for (let i = 0; i < mib; i++) {
      if (!out.write(randomBytes(MiB))) await new Promise((r) => out.once('drain', r));
    }
    await new Promise((r) => out.end(r));
    const whole = createHash('sha256');
    const digests = [];
    let chunk = createHash('sha256');
    let inChunk = 0;
    for await (const data of createReadStream(file, { highWaterMark: MiB })) {
      whole.update(data);
      chunk.update(data);
      inChunk += data.length;
      if (inChunk === chunkSize) {
        digests.push(chunk.digest('hex'));
        chunk = createHash('sha256');
        inChunk = 0;
      }
    }
    if (inChunk > 0) digests.push(chunk.digest('hex'));
    writeFileSync(meta, JSON.stringify({ sha256: whole.digest('hex'), digests, chunkSize }));
  }
  const { sha256, digests } = JSON.parse(readFileSync(meta, 'utf8'));
  const list = buildChunkList(digests);
  await mkdir(join(root, 'v1', NETWORK, 'chunks'), { recursive: true });
  writeFileSync(join(root, 'v1', NETWORK, 'chunks', `${list.sha256}.json`), list.bytes);
  return { file, name: `model-${mib}m.bin`, size: (await stat(file)).size, sha256, chunks: { size: chunkSize, sha256: list.sha256 } };
}

function modelAt(model, urls) {
  return { name: 'bench', version: '1', sha256: model.sha256, size: model.size, urls, chunks: model.chunks };
}

/** Ours, in a child process: seconds, peak RSS, the mirrors' report; `killAt` (fraction) sends SIGKILL once progress passes it. */
async function ours(model, urls, origin, root, options = {}) {
  const input = {
    model: modelAt(model, urls),
    root,
    origin,
    network: NETWORK,
    connections,
    progress: options.killAt !== undefined,
    fsync: options.fsync !== false,
    ...((options.applier ?? process.env.APPLIER) ? { applier: options.applier ?? process.env.APPLIER } : {}),
    ...(options.maxBytesPerSecond ? { maxBytesPerSecond: options.maxBytesPerSecond } : {}),
  };
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [join(here, 'chunked-run.mjs'), JSON.stringify(input)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let result = null;
  let lastProgress = 0;
  let buffered = '';
  child.stdout.on('data', (d) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop();
    for (const line of lines) {
      if (line.startsWith('progress ')) {
        lastProgress = Number(line.slice(9));
        if (options.killAt !== undefined && lastProgress >= options.killAt * model.size) child.kill('SIGKILL');
      } else if (line.startsWith('{')) result = JSON.parse(line);
    }
  });
  const signal = await new Promise((resolve) => child.once('exit', (code, sig) => resolve(sig ?? code)));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  return { ...(result ?? {}), signal, wall, lastProgress };
}

async function fresh(dir) {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await settle();
}

const mibps = (s, mib = sizeMiB) => +(mib / s).toFixed(1);
const report = {
  node: process.version,
  sizeMiB,
  runs,
  connections,
  chunkMiB: chunkSize / MiB,
  load: readFileSync('/proc/loadavg', 'utf8').trim(),
  scenarios: {},
};
const root = join(work, 'root');
await mkdir(root, { recursive: true });
const out = join(work, 'out');

/** A figure per tool: wall and CPU seconds of each run. */
const collect = () => ({ seconds: [], cpu: [] });
const add = (t, r) => {
  t.seconds.push(r.seconds);
  t.cpu.push(r.cpuSeconds);
};
const cpuPerGiB = (t, mib = sizeMiB) => +((median(t.cpu) * 1024) / mib).toFixed(2);
const rounded = (t) =>
  Object.fromEntries(Object.entries(t).map(([k, v]) => [k, { seconds: v.seconds.map((x) => +x.toFixed(3)), cpu: v.cpu.map((x) => +x.toFixed(2)) }]));

/** Ours in a child, failing the benchmark if the download failed. */
async function oursOk(...args) {
  const r = await ours(...args);
  if (r.signal !== 0) throw new Error(`our download failed (${r.signal})`);
  return r;
}

if (scenarios.has('main')) {
  const model = await ensureModel(root, sizeMiB);
  const server = await startNginx(join(work, 'nginx-main'), root);
  const url = `${server.url}/${model.name}`;
  try {
    await curl(url, join(work, 'warm.out')); // page cache warm for everyone
    await rm(join(work, 'warm.out'));
    const t = { curl1: collect(), curlN: collect(), aria: collect(), ours: collect(), oursNoFsync: collect() };
    const rss = [];
    for (let i = 0; i < runs; i++) {
      await fresh(out);
      add(t.curl1, await curl(url, join(out, 'out')));
      await fresh(out);
      add(t.curlN, await curlRanges(url, model.size, out, connections));
      await fresh(out);
      add(t.aria, await aria2c([url], out, connections, chunkSize / MiB));
      await fresh(out);
      const r = await oursOk(model, [url], server.url, join(out, 'store'));
      add(t.ours, r);
      rss.push(r.peakRssMiB);
      // Diagnostic only, not the figure compared: the same download with the store's flushes off.
      await fresh(out);
      add(t.oursNoFsync, await oursOk(model, [url], server.url, join(out, 'store'), { fsync: false }));
    }
    const m = (k) => median(t[k].seconds);
    report.scenarios.main = {
      curl1MiBps: mibps(m('curl1')),
      curlNMiBps: mibps(m('curlN')),
      aria2MiBps: mibps(m('aria')),
      oursMiBps: mibps(m('ours')),
      oursNoFsyncMiBps: mibps(m('oursNoFsync')),
      oursVsCurl1: +(m('curl1') / m('ours')).toFixed(2),
      oursVsCurlN: +(m('curlN') / m('ours')).toFixed(2),
      oursVsAria2: +(m('aria') / m('ours')).toFixed(2),
      cpuSecondsPerGiB: Object.fromEntries(Object.keys(t).map((k) => [k, cpuPerGiB(t[k])])),
      peakRssMiB: +Math.max(...rss).toFixed(1),
      runs: rounded(t),
    };
  } finally {
    await server.stop();
  }
  console.error(JSON.stringify(report.scenarios.main));
}

if (scenarios.has('ab')) {
  // Ours only, flushes on, the baseline build and this one interleaved run by run (each after a
  // write of the same size, freed again, like ours after aria2c in `main`): CPU seconds per GiB.
  const baseline = process.env.APPLIER_BASELINE;
  // AB_DISK_BUSY=1: another writer on the same disk during each run (dd of 4 GiB with fdatasync).
  const diskBusy = process.env.AB_DISK_BUSY === '1';
  if (!baseline) throw new Error('scenario ab needs APPLIER_BASELINE=<path of another build of dist/index.js>');
  const model = await ensureModel(root, sizeMiB);
  const server = await startNginx(join(work, 'nginx-ab'), root);
  const url = `${server.url}/${model.name}`;
  const builds = { baseline: { applier: baseline }, current: {} };
  const t = { baseline: collect(), current: collect() };
  const lines = [];
  try {
    for (let i = 0; i < runs; i++) {
      for (const [name, options] of Object.entries(builds)) {
        await fresh(out);
        await copyFile(model.file, join(out, 'before'));
        await fresh(out);
        const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
        const busy = diskBusy
          ? spawn('dd', ['if=/dev/zero', `of=${join(work, 'busy.bin')}`, 'bs=1M', 'count=4096', 'conv=fdatasync'], { stdio: 'ignore' })
          : null;
        const r = await oursOk(model, [url], server.url, join(out, 'store'), options);
        if (busy !== null) {
          if (busy.exitCode === null && busy.signalCode === null) {
            const exited = new Promise((resolve) => busy.once('exit', resolve));
            busy.kill('SIGKILL');
            await exited;
          }
          await rm(join(work, 'busy.bin'), { force: true });
        }
        add(t[name], r);
        lines.push({ build: name, seconds: +r.seconds.toFixed(2), user: +r.userSeconds.toFixed(2), system: +r.systemSeconds.toFixed(2), load });
        console.error(JSON.stringify(lines.at(-1)));
      }
    }
    report.scenarios.ab = {
      diskBusy,
      cpuSecondsPerGiB: { baseline: cpuPerGiB(t.baseline), current: cpuPerGiB(t.current) },
      MiBps: { baseline: mibps(median(t.baseline.seconds)), current: mibps(median(t.current.seconds)) },
      runs: lines,
    };
  } finally {
    await server.stop();
  }
  console.error(JSON.stringify({ ...report.scenarios.ab, runs: undefined }));
}

if (scenarios.has('limited')) {
  // Smaller file: a single rate-limited connection is slow by design.
  const mib = Math.min(sizeMiB, 256);
  const model = await ensureModel(root, mib);
  const limit = '20m'; // nginx limit_rate: per connection
  const servers = [];
  for (let i = 0; i < 3; i++) servers.push(await startNginx(join(work, `nginx-limited-${i}`), root, limit));
  const urls = servers.map((s) => `${s.url}/${model.name}`);
  try {
    // aria2c splits a file in pieces of at least -k: with -k at the chunk size it opens only as
    // many connections as the file has chunks; -k8M (our piece size) lets it open all of them.
    const t = { curl1: collect(), aria3: collect(), aria3k8: collect(), ours3: collect() };
    for (let i = 0; i < Math.max(1, Math.min(runs, 2)); i++) {
      await fresh(out);
      add(t.curl1, await curl(urls[0], join(out, 'out')));
      await fresh(out);
      add(t.aria3, await aria2c(urls, out, connections, chunkSize / MiB));
      await fresh(out);
      add(t.aria3k8, await aria2c(urls, out, connections, 8));
      await fresh(out);
      add(t.ours3, await oursOk(model, urls, servers[0].url, join(out, 'store')));
    }
    const m = (k) => median(t[k].seconds);
    report.scenarios.limited = {
      sizeMiB: mib,
      limitRatePerConnection: limit,
      curlFromOneMiBps: mibps(m('curl1'), mib),
      aria2FromThreeMiBps: mibps(m('aria3'), mib),
      aria2k8FromThreeMiBps: mibps(m('aria3k8'), mib),
      oursFromThreeMiBps: mibps(m('ours3'), mib),
      oursVsCurlFromOne: +(m('curl1') / m('ours3')).toFixed(2),
      oursVsAria2FromThree: +(m('aria3') / m('ours3')).toFixed(2),
      oursVsAria2k8FromThree: +(m('aria3k8') / m('ours3')).toFixed(2),
      runs: rounded(t),
    };
  } finally {
    for (const s of servers) await s.stop();
  }
  console.error(JSON.stringify(report.scenarios.limited));
}

if (scenarios.has('resume')) {
  const model = await ensureModel(root, sizeMiB);
  const server = await startNginx(join(work, 'nginx-resume'), root);
  const url = `${server.url}/${model.name}`;
  try {
    await fresh(out);
    server.clearLog();
    const first = await ours(model, [url], server.url, join(out, 'store'), { killAt: 0.5 });
    const sentBeforeKill = server.bytesSent();
    const second = await ours(model, [url], server.url, join(out, 'store'));
    const sentTotal = server.bytesSent();
    const listBytes = (await stat(join(root, 'v1', NETWORK, 'chunks', `${model.chunks.sha256}.json`))).size;
    // Everything nginx sent over both runs beyond one copy of the file (and the chunk list twice) was fetched again.
    const again = sentTotal - model.size - 2 * listBytes;
    report.scenarios.resume = {
      killedBy: first.signal,
      progressAtKill: first.lastProgress,
      sentBeforeKill,
      secondRunSeconds: +second.seconds.toFixed(3),
      secondRunOk: second.signal === 0,
      bytesFetchedAgain: again,
      bound: connections * chunkSize,
      withinBound: again <= connections * chunkSize,
      note: 'bytes sent include HTTP headers and whatever sat in socket buffers at the kill',
    };
  } finally {
    await server.stop();
  }
  console.error(JSON.stringify(report.scenarios.resume));
}

if (scenarios.has('bad')) {
  const model = await ensureModel(root, sizeMiB);
  // A second root holding the same file with one byte flipped in every chunk: whichever chunk
  // that mirror is asked for, it serves it wrong.
  const badRoot = join(work, 'bad-root');
  await mkdir(badRoot, { recursive: true });
  const badFile = join(badRoot, model.name);
  await copyFile(model.file, badFile);
  const handle = await open(badFile, 'r+');
  const original = await open(model.file, 'r');
  for (let at = 12345; at < model.size; at += chunkSize) {
    const byte = Buffer.alloc(1);
    await original.read(byte, 0, 1, at);
    byte[0] ^= 0xff;
    await handle.write(byte, 0, 1, at);
  }
  await original.close();
  await handle.close();
  const servers = [
    await startNginx(join(work, 'nginx-bad-0'), root),
    await startNginx(join(work, 'nginx-bad-1'), badRoot),
    await startNginx(join(work, 'nginx-bad-2'), root),
  ];
  try {
    // The reference: the two good mirrors alone.
    await fresh(out);
    const good = await oursOk(
      model,
      [servers[0], servers[2]].map((s) => `${s.url}/${model.name}`),
      servers[0].url,
      join(out, 'store'),
    );
    await fresh(out);
    const r = await ours(
      model,
      servers.map((s) => `${s.url}/${model.name}`),
      servers[0].url,
      join(out, 'store'),
    );
    const stored = join(out, 'store', 'sha256', model.sha256);
    const hash = createHash('sha256');
    for await (const data of createReadStream(stored, { highWaterMark: 4 * MiB })) hash.update(data);
    report.scenarios.bad = {
      ok: r.signal === 0,
      seconds: +(r.seconds ?? 0).toFixed(3),
      twoGoodAloneSeconds: +good.seconds.toFixed(3),
      vsTwoGoodAlone: +(good.seconds / r.seconds).toFixed(2),
      rightHash: hash.digest('hex') === model.sha256,
      mirrors: r.mirrors?.map((m) => ({ index: m.index, bytes: m.bytes, failure: m.failure?.code ?? null })),
    };
  } finally {
    for (const s of servers) await s.stop();
  }
  console.error(JSON.stringify(report.scenarios.bad));
}

await rm(out, { recursive: true, force: true });
console.log(JSON.stringify(report, null, 2));
