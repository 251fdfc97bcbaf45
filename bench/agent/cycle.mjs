#!/usr/bin/env node
// Sync cycle costs of the Agent on loopback, with the real origin client, verifier, state
// directory (fsync'd writes) and applier (Docker listing; no containers or models to move).
//
//   no-change : one check that gets 304 from the dev origin (GET latest.json; nothing is
//               written: the time of the check stays in memory); wall time and CPU time
//   new       : one full sync of a newly published snapshot: latest, fetch, verify, plan,
//               journal, execute, record, audit (about 10 fsync'd appends and writes)
//   verify    : verifySnapshot alone on a large snapshot (200 models, 50 containers)
//
//   pnpm --filter @resultity/agent... build
//   node bench/agent/cycle.mjs --rounds 200
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const here = new URL('.', import.meta.url);
const agent = await import(new URL('../../apps/agent/dist/index.js', here).href);
const snapshot = await import(new URL('../../packages/snapshot/dist/index.js', here).href);
// The dev network's helpers live in the private testkit (TypeScript source): run this with tsx.
const devnet = await import('@resultity/testkit/devnet');

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' } } });
const rounds = Number(values.rounds);

/** The dev origin in a child process; resolves with its URL once it listens. */
async function startOriginProcess(dir) {
  const { spawn } = await import('node:child_process');
  const code = `const o = await import(${JSON.stringify(new URL('../../packages/snapshot/dist/origin/index.js', here).href)});
    const s = await o.startOriginServer({ dir: ${JSON.stringify(dir)} });
    process.stdout.write(s.url + '\\n');
    process.on('SIGTERM', () => s.close().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(String(d).trim()));
    child.once('exit', (c) => reject(new Error(`origin exited with ${c}`)));
  });
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        child.once('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

function stats(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, p50: at(0.5).toFixed(2), p95: at(0.95).toFixed(2), max: sorted.at(-1).toFixed(2) };
}

const work = await mkdtemp(join(tmpdir(), 'agent-bench-'));
try {
  const net = await devnet.createDevNetwork(join(work, 'net'), 'benchnet');
  await (await import('node:fs/promises')).mkdir(net.originDir, { recursive: true });
  // The origin runs in a process of its own, so the CPU time measured below is the Agent's alone.
  const server = await startOriginProcess(net.originDir);
  const config = agent.parseConfig(
    {
      network: 'benchnet',
      origin: server.url,
      node_id: 'bench-node',
      trust_root: [net.rootFile],
      state_dir: join(work, 'state'),
      bridge: { enabled: false },
      status: { listen: null },
      log_level: 'silent',
    },
    work,
  );
  const applier = agent.applierFor(config, agent.silentLogger);
  const parts = await agent.buildAgent(config, { applier, notifier: agent.noRuntimeNotifier(), logger: agent.silentLogger });

  const newSamples = [];
  let sequence = 0;
  for (let i = 0; i < Math.max(10, Math.floor(rounds / 4)); i++) {
    sequence += 1;
    await net.publish(devnet.devSnapshot({ network: 'benchnet', sequence }));
    const t = performance.now();
    const outcome = await parts.engine.syncOnce();
    newSamples.push(performance.now() - t);
    if (outcome.result !== 'applied') throw new Error(`expected applied, got ${JSON.stringify(outcome)}`);
  }

  const { stat } = await import('node:fs/promises');
  const identity = async () => {
    const s = await stat(join(work, 'state', 'state.json'), { bigint: true });
    return `${s.ino}:${s.mtimeNs}`;
  };
  const before = await identity();
  const noChange = [];
  const noChangeCpu = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    const cpu = process.cpuUsage();
    const outcome = await parts.engine.syncOnce();
    const used = process.cpuUsage(cpu);
    noChange.push(performance.now() - t);
    noChangeCpu.push((used.user + used.system) / 1000);
    if (outcome.result !== 'unchanged') throw new Error(`expected unchanged, got ${outcome.result}`);
  }
  const stateWrites = (await identity()) === before ? 0 : 'state.json was rewritten';

  await server.close();

  // Large-snapshot verification, for scale (what `verify` costs inside a "new" cycle).
  const models = Array.from({ length: 200 }, (_, i) => ({
    name: `model-${i}`,
    version: '1.0.0',
    sha256: 'a'.repeat(64),
    size: 1_000_000 + i,
    urls: [`https://models.example/m${i}.gguf`],
  }));
  const containers = Array.from({ length: 50 }, (_, i) => ({
    name: `c-${i}`,
    image: `registry.example/r${i}`,
    tag: '1',
    digest: `sha256:${'b'.repeat(64)}`,
    env: { I: String(i) },
    command: [],
    ports: [],
    restart: 'always',
  }));
  const large = net.sign(devnet.devSnapshot({ network: 'benchnet', sequence: 1, models, containers }));
  const root = snapshot.walkRootChain([new Uint8Array(await (await import('node:fs/promises')).readFile(net.rootFile))]);
  const verify = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await snapshot.verifySnapshot({ envelope: large.bytes, root, network: 'benchnet', now: new Date() });
    verify.push(performance.now() - t);
  }

  const result = {
    node: process.version,
    'no-change (ms)': stats(noChange),
    'no-change CPU of the Agent (ms)': stats(noChangeCpu),
    'no-change state.json writes': stateWrites,
    'new snapshot applied (ms)': stats(newSamples),
    [`verify ${large.bytes.byteLength} B envelope (ms)`]: stats(verify),
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await rm(work, { recursive: true, force: true });
}
