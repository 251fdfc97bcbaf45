// Chunked model download of @resultity/applier (ranged requests over every mirror, each chunk
// verified, fdatasync + journal, whole-file sha256) next to bare curl and aria2c with the same
// number of connections, all from nginx on 127.0.0.1.
// Usage: node bench/applier/chunked.mjs [sizeMiB=1024] [runs=3] [scenarios=main,limited,resume,bad] [connections=8] [chunkMiB=64]
// Needs `pnpm --filter @resultity/applier build`, nginx, curl and aria2c. Scratch: bench/.work/applier-chunked.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, open, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { buildChunkList } from '../../packages/snapshot/dist/index.js';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, '..', '.work', 'applier-chunked');
const sizeMiB = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 3);
const scenarios = new Set((process.argv[4] ?? 'main,limited,resume,bad').split(','));
const connections = Number(process.argv[5] ?? 8);
const chunkSize = Number(process.argv[6] ?? 64) * 2 ** 20;
const MiB = 2 ** 20;
const NETWORK = 'bench';

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const settle = () => run('sync');

async function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** One nginx process serving `root` (sendfile on), optionally with a per-connection limit_rate, logging bytes sent. */
async function startNginx(name, root, limitRate) {
  const prefix = join(work, `nginx-${name}`);
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const port = await freePort();
  const log = join(prefix, 'logs', 'bytes.log');
  await rm(log, { force: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off; master_process off; worker_processes 1; pid ${prefix}/nginx.pid; error_log ${prefix}/logs/error.log;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 256; }
http { log_format bytes '$bytes_sent'; access_log ${log} bytes; sendfile on; default_type application/octet-stream;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy; fastcgi_temp_path ${prefix}/fastcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
  server { listen 127.0.0.1:${port}; root ${root}; ${limitRate ? `limit_rate ${limitRate};` : ''} } }
`,
  );
  const child = spawn('nginx', ['-p', prefix, '-c', conf], { stdio: 'inherit' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) =>
      net
        .connect(port, '127.0.0.1')
        .once('connect', function () {
          this.destroy();
          resolve(true);
        })
        .once('error', () => resolve(false)),
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    /** Bytes this nginx sent since the log was last cleared (headers included). */
    bytesSent: () =>
      existsSync(log)
        ? readFileSync(log, 'utf8')
            .split('\n')
            .filter(Boolean)
            .reduce((n, l) => n + Number(l), 0)
        : 0,
    clearLog: () => writeFileSync(log, ''),
    stop: () => new Promise((resolve) => child.once('exit', resolve).kill('SIGTERM')),
  };
}

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

async function curlOne(url, out) {
  const t0 = process.hrtime.bigint();
  await run('curl', ['-sS', '--fail', '-o', out, url]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** One curl process, `n` connections in parallel, each a range of the file into its own part file. */
async function curlParallel(url, size, outDir, n) {
  const per = Math.ceil(size / n);
  const args = ['-sS', '--fail', '--parallel', '--parallel-max', String(n)];
  for (let i = 0; i < n; i++) args.push('-r', `${i * per}-${Math.min(size, (i + 1) * per) - 1}`, '-o', join(outDir, `part${i}`), url);
  const t0 = process.hrtime.bigint();
  await run('curl', args);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function aria2(urls, outDir, n, checksum) {
  const args = [
    '-q',
    '-x',
    String(n),
    '-s',
    String(n),
    '-k',
    `${chunkSize / MiB}M`,
    '--file-allocation=none',
    '--allow-overwrite=true',
    '--auto-file-renaming=false',
    '-d',
    outDir,
    '-o',
    'out',
  ];
  if (checksum) args.push(`--checksum=sha-256=${checksum}`);
  const t0 = process.hrtime.bigint();
  await run('aria2c', [...args, ...urls]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
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

if (scenarios.has('main')) {
  const model = await ensureModel(root, sizeMiB);
  const server = await startNginx('main', root);
  const url = `${server.url}/${model.name}`;
  try {
    await curlOne(url, join(work, 'warm.out')); // page cache warm for everyone
    await rm(join(work, 'warm.out'));
    const t = { curl1: [], curlN: [], aria: [], ours: [], oursNoFsync: [], rss: [] };
    for (let i = 0; i < runs; i++) {
      await fresh(out);
      t.curl1.push(await curlOne(url, join(out, 'out')));
      await fresh(out);
      t.curlN.push(await curlParallel(url, model.size, out, connections));
      await fresh(out);
      t.aria.push(await aria2([url], out, connections));
      await fresh(out);
      const r = await ours(model, [url], server.url, join(out, 'store'));
      if (r.signal !== 0) throw new Error(`our download failed (${r.signal})`);
      t.ours.push(r.seconds);
      t.rss.push(r.peakRssMiB);
      // Diagnostic only, not the figure compared: the same download with the store's flushes off.
      await fresh(out);
      const d = await ours(model, [url], server.url, join(out, 'store'), { fsync: false });
      if (d.signal !== 0) throw new Error(`our download failed (${d.signal})`);
      t.oursNoFsync.push(d.seconds);
    }
    report.scenarios.main = {
      curl1MiBps: mibps(median(t.curl1)),
      curlNMiBps: mibps(median(t.curlN)),
      aria2MiBps: mibps(median(t.aria)),
      oursMiBps: mibps(median(t.ours)),
      oursNoFsyncMiBps: mibps(median(t.oursNoFsync)),
      oursVsCurl1: +(median(t.curl1) / median(t.ours)).toFixed(2),
      oursVsCurlN: +(median(t.curlN) / median(t.ours)).toFixed(2),
      oursVsAria2: +(median(t.aria) / median(t.ours)).toFixed(2),
      peakRssMiB: +Math.max(...t.rss).toFixed(1),
      seconds: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.map((x) => +x.toFixed(3))])),
    };
  } finally {
    await server.stop();
  }
  console.error(JSON.stringify(report.scenarios.main));
}

if (scenarios.has('limited')) {
  // Smaller file: a single rate-limited connection is slow by design.
  const mib = Math.min(sizeMiB, 256);
  const model = await ensureModel(root, mib);
  const limit = '20m'; // nginx limit_rate: per connection
  const servers = [];
  for (let i = 0; i < 3; i++) servers.push(await startNginx(`limited-${i}`, root, limit));
  const urls = servers.map((s) => `${s.url}/${model.name}`);
  try {
    const t = { curl1: [], aria3: [], ours3: [] };
    for (let i = 0; i < Math.max(1, Math.min(runs, 2)); i++) {
      await fresh(out);
      t.curl1.push(await curlOne(urls[0], join(out, 'out')));
      await fresh(out);
      t.aria3.push(await aria2(urls, out, connections));
      await fresh(out);
      const r = await ours(model, urls, servers[0].url, join(out, 'store'));
      if (r.signal !== 0) throw new Error(`our download failed (${r.signal})`);
      t.ours3.push(r.seconds);
    }
    report.scenarios.limited = {
      sizeMiB: mib,
      limitRatePerConnection: limit,
      curlFromOneMiBps: mibps(median(t.curl1), mib),
      aria2FromThreeMiBps: mibps(median(t.aria3), mib),
      oursFromThreeMiBps: mibps(median(t.ours3), mib),
      oursVsCurlFromOne: +(median(t.curl1) / median(t.ours3)).toFixed(2),
      oursVsAria2FromThree: +(median(t.aria3) / median(t.ours3)).toFixed(2),
      seconds: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.map((x) => +x.toFixed(3))])),
    };
  } finally {
    for (const s of servers) await s.stop();
  }
  console.error(JSON.stringify(report.scenarios.limited));
}

if (scenarios.has('resume')) {
  const model = await ensureModel(root, sizeMiB);
  const server = await startNginx('resume', root);
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
  const servers = [await startNginx('bad-0', root), await startNginx('bad-1', badRoot), await startNginx('bad-2', root)];
  try {
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
