// Model download + verify throughput of @resultity/applier next to curl fetching the same file
// from the same local server. Usage: node bench/applier/download.mjs [sizesMiB=128,1024] [runs=3] [nginx|node]
// Server: nginx (default; sendfile, like a CDN) or node (bench/applier/serve.mjs), 4th argument.
// Needs `pnpm --filter @resultity/applier build` first. Scratch files go to bench/.work/applier.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { FsModelStore, HttpDownloader, fetchModel, systemClock } from '../../packages/applier/dist/index.js';
import { curl, median, settle, startNginx } from './references.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, '..', '.work', 'applier');
const sizes = (process.argv[2] ?? '128,1024').split(',').map(Number);
const runs = Number(process.argv[3] ?? 3);
const serverKind = process.argv[4] ?? 'nginx';
const MiB = 1024 * 1024;

async function ensureFile(sizeMiB) {
  const file = join(work, `model-${sizeMiB}m.bin`);
  if (existsSync(file) && existsSync(`${file}.sha256`)) return { file, sha256: readFileSync(`${file}.sha256`, 'utf8').trim() };
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let i = 0; i < sizeMiB; i++) {
    const block = randomBytes(MiB);
    hash.update(block);
    if (!out.write(block)) await new Promise((r) => out.once('drain', r));
  }
  await new Promise((r) => out.end(r));
  const sha256 = hash.digest('hex');
  writeFileSync(`${file}.sha256`, sha256);
  return { file, sha256 };
}

async function startNodeServer(file) {
  const child = spawn(process.execPath, [join(here, 'serve.mjs'), file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve) => child.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  return { url: `http://127.0.0.1:${port}/model.bin`, stop: () => child.kill('SIGTERM') };
}

/** nginx serving the work directory (what a model CDN looks like), the same as the chunked benchmark's. */
async function startNginxFor(file) {
  const server = await startNginx(join(work, 'nginx'), dirname(file));
  return { url: `${server.url}/${basename(file)}`, stop: () => server.stop() };
}

const startServer = serverKind === 'node' ? startNodeServer : startNginxFor;

/** curl into a file with what the mode adds (see references.mjs), each run from a clean page cache. */
async function curlOnce(url, out, mode) {
  await rm(out, { force: true });
  await settle();
  const { seconds } = await curl(url, out, mode);
  await rm(out, { force: true });
  return seconds;
}

async function applierOnce(url, sha256, size, root, durable) {
  await rm(root, { recursive: true, force: true });
  const store = new FsModelStore(root, { fsync: durable });
  await settle();
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  const t0 = process.hrtime.bigint();
  await fetchModel(
    { name: 'bench', version: '1', sha256, size, urls: [url] },
    { models: store, downloader: new HttpDownloader({ allowPrivateAddresses: true }), clock: systemClock },
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage.rss());
  await rm(root, { recursive: true, force: true });
  return { seconds, rssGrowthMiB: (peak - baseline) / MiB, peakRssMiB: peak / MiB };
}

await mkdir(work, { recursive: true });
const rows = [];
for (const sizeMiB of sizes) {
  const { file, sha256 } = await ensureFile(sizeMiB);
  const size = (await stat(file)).size;
  const server = await startServer(file);
  try {
    await curlOnce(server.url, join(work, 'warm.out'), {}); // warms the page cache for both
    const modes = [
      { label: 'curl | applier, store fsync off', durable: false, verify: false },
      { label: 'curl + sync -d | applier (default: fdatasync before rename)', durable: true, verify: false },
      { label: 'curl + openssl dgst -sha256 + sync -d | applier (default)', durable: true, verify: true },
    ];
    for (const mode of modes) {
      const curl = [];
      const ours = [];
      // Interleaved, so that a noisy neighbour or disk writeback hits both sides alike.
      for (let i = 0; i < runs; i++) {
        curl.push(await curlOnce(server.url, join(work, 'curl.out'), mode));
        ours.push(await applierOnce(server.url, sha256, size, join(work, 'store'), mode.durable));
      }
      const curlS = median(curl);
      const oursS = median(ours.map((o) => o.seconds));
      rows.push({
        sizeMiB,
        mode: mode.label,
        curlMiBps: +(sizeMiB / curlS).toFixed(1),
        applierMiBps: +(sizeMiB / oursS).toFixed(1),
        ratio: +(curlS / oursS).toFixed(2),
        peakRssMiB: +Math.max(...ours.map((o) => o.peakRssMiB)).toFixed(1),
        rssGrowthMiB: +Math.max(...ours.map((o) => o.rssGrowthMiB)).toFixed(1),
        curlSeconds: curl.map((x) => +x.toFixed(3)),
        applierSeconds: ours.map((o) => +o.seconds.toFixed(3)),
      });
    }
  } finally {
    await server.stop();
  }
}
console.log(JSON.stringify({ runs, server: serverKind, node: process.version, rows }, null, 2));
console.log('\n| file | reference \\| applier | reference MiB/s | applier MiB/s | applier / reference | peak RSS MiB | RSS growth MiB |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.sizeMiB} MiB | ${r.mode.replace('|', '\\|')} | ${r.curlMiBps} | ${r.applierMiBps} | ${r.ratio}× | ${r.peakRssMiB} | ${r.rssGrowthMiB} |`);
}
