// Container recreate time of @resultity/applier (read state, plan, stop, create, start, wait
// until running, remove) next to the docker CLI doing the same with the same image: `docker run`
// alone, and `docker stop && docker rm && docker run`. Usage: node bench/applier/recreate.mjs [runs=7]
// Needs Docker, the registry on 127.0.0.1:5000 and `pnpm --filter @resultity/applier build`.
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { SnapshotSchema } from '../../packages/snapshot/dist/index.js';
import { createDefaultPorts, desiredStateFrom, execute, plan, readCurrentState } from '../../packages/applier/dist/index.js';

const run = promisify(execFile);
const docker = async (...args) => (await run('docker', args)).stdout.trim();
const runs = Number(process.argv[2] ?? 7);
const registry = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const id = `b${process.pid}`;
const policy = { allowedRegistries: [registry], labelPrefix: `io.resultity.${id}`, containerNamePrefix: `rb${id}` };

async function buildImage() {
  const dir = await mkdtemp(join(tmpdir(), 'resultity-bench-'));
  await copyFile(process.env.RESULTITY_BUSYBOX ?? '/bin/busybox', join(dir, 'busybox'));
  // A service that stops promptly on SIGTERM, as a real runtime would.
  await writeFile(
    join(dir, 'Dockerfile'),
    'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","sh","-c","trap \'exit 0\' TERM; /bin/busybox sleep 3600 & wait"]\n',
  );
  const image = `${registry}/applier-bench/svc`;
  await docker('build', '-q', '-t', `${image}:v1`, dir);
  await docker('push', '-q', `${image}:v1`);
  const digests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', `${image}:v1`));
  await rm(dir, { recursive: true, force: true });
  return { image, digest: digests.find((d) => d.startsWith(`${image}@`)).slice(image.length + 1) };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (fn) => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};

const { image, digest } = await buildImage();
const state = await mkdtemp(join(tmpdir(), 'resultity-bench-state-'));
const ports = createDefaultPorts({ stateDir: state, policy });
const base = {
  schema: 1,
  network: 'testnet',
  sequence: 1,
  issued_at: '2026-11-25T12:00:00Z',
  expires_at: '2099-01-01T00:00:00Z',
  models: [],
  job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1000 },
  participation: { mode: 'testnet', subclouds: [] },
  ttl: { poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 2000, cache_ttl_s: 60 },
};
async function apply(generation, stableMs) {
  const snapshot = SnapshotSchema.parse({
    ...base,
    runtime: { containers: [{ name: 'svc', image, tag: 'v1', digest, env: { GENERATION: String(generation) }, command: [], ports: [], restart: 'no' }] },
  });
  const steps = plan(
    await readCurrentState(ports, policy),
    desiredStateFrom(snapshot, `sha256:${String(generation).padStart(64, '0')}`, { vram_gb: 0, regions: [], gpu: [] }),
    { policy },
  );
  await execute(steps, ports, { policy, stableMs, pollMs: 50, stopTimeoutSeconds: 10 });
}

const results = { applier: [], applierStable: [], dockerRun: [], dockerRecreate: [] };
let generation = 0;
try {
  await apply(generation++, 0);
  let cli = await docker('run', '-d', '--network', 'none', '--label', `${policy.labelPrefix}.bench=1`, `${image}@${digest}`);
  for (let i = 0; i < runs; i++) {
    results.applier.push(await time(() => apply(generation++, 0)));
    results.applierStable.push(await time(() => apply(generation++, 2000)));
    results.dockerRecreate.push(
      await time(async () => {
        await docker('stop', cli);
        await docker('rm', cli);
        cli = await docker('run', '-d', '--network', 'none', '--label', `${policy.labelPrefix}.bench=1`, '-e', `GENERATION=${i}`, `${image}@${digest}`);
      }),
    );
    let fresh = '';
    results.dockerRun.push(
      await time(async () => {
        fresh = await docker('run', '-d', '--network', 'none', '--label', `${policy.labelPrefix}.bench=1`, `${image}@${digest}`);
      }),
    );
    await docker('rm', '-f', fresh);
  }
} finally {
  const left = (await docker('ps', '-aq', '--filter', `label=${policy.labelPrefix}.managed-by`, '--filter', `label=${policy.labelPrefix}.bench`))
    .split('\n')
    .filter(Boolean);
  const all = [
    ...left,
    ...(await docker('ps', '-aq', '--filter', `label=${policy.labelPrefix}.bench`)).split('\n').filter(Boolean),
    ...(await docker('ps', '-aq', '--filter', `label=${policy.labelPrefix}.managed-by`)).split('\n').filter(Boolean),
  ];
  if (all.length > 0) await docker('rm', '-f', ...new Set(all));
  await rm(state, { recursive: true, force: true });
}

const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, +median(v).toFixed(0)]));
console.log(JSON.stringify({ runs, docker: await docker('version', '--format', '{{.Server.Version}}'), mediansMs: m, results }, null, 2));
console.log('\n| what | median ms | vs docker run | vs docker stop+rm+run |');
console.log('| --- | --- | --- | --- |');
const row = (label, v) => console.log(`| ${label} | ${v} | ${(v / m.dockerRun).toFixed(2)}× | ${(v / m.dockerRecreate).toFixed(2)}× |`);
row('`docker run -d` (new container only)', m.dockerRun);
row('`docker stop && docker rm && docker run -d`', m.dockerRecreate);
row('applier recreate (running = up)', m.applier);
row('applier recreate (default 2 s stability window)', m.applierStable);
