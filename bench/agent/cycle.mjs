#!/usr/bin/env node
// Sync cycle costs of the Agent on loopback, with the real origin client, verifier, state
// directory (fsync'd writes) and applier (Docker listing; no containers or models to move).
//
//   no-change : one check that gets 304 from the dev origin (GET latest.json, state write)
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
const origin = await import(new URL('../../packages/snapshot/dist/origin/index.js', here).href);

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' } } });
const rounds = Number(values.rounds);

function stats(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { n: sorted.length, p50: at(0.5).toFixed(2), p95: at(0.95).toFixed(2), max: sorted.at(-1).toFixed(2) };
}

const work = await mkdtemp(join(tmpdir(), 'agent-bench-'));
try {
  const net = await agent.createDevNetwork(join(work, 'net'), 'benchnet');
  await (await import('node:fs/promises')).mkdir(net.originDir, { recursive: true });
  const server = await origin.startOriginServer({ dir: net.originDir });
  const config = agent.parseConfig(
    { network: 'benchnet', origin: server.url, node_id: 'bench-node', trust_root: [net.rootFile], state_dir: join(work, 'state'), bridge: { enabled: false }, status: { listen: null }, log_level: 'silent' },
    work,
  );
  const applier = agent.applierFor(config, agent.silentLogger);
  const parts = await agent.buildAgent(config, { applier, notifier: agent.noRuntimeNotifier(), logger: agent.silentLogger });

  const newSamples = [];
  let sequence = 0;
  for (let i = 0; i < Math.max(10, Math.floor(rounds / 4)); i++) {
    sequence += 1;
    await net.publish(agent.devSnapshot({ network: 'benchnet', sequence }));
    const t = performance.now();
    const outcome = await parts.engine.syncOnce();
    newSamples.push(performance.now() - t);
    if (outcome.result !== 'applied') throw new Error(`expected applied, got ${JSON.stringify(outcome)}`);
  }

  const noChange = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    const outcome = await parts.engine.syncOnce();
    noChange.push(performance.now() - t);
    if (outcome.result !== 'unchanged') throw new Error(`expected unchanged, got ${outcome.result}`);
  }

  await server.close();

  // Large-snapshot verification, for scale (what `verify` costs inside a "new" cycle).
  const models = Array.from({ length: 200 }, (_, i) => ({ name: `model-${i}`, version: '1.0.0', sha256: 'a'.repeat(64), size: 1_000_000 + i, urls: [`https://models.example/m${i}.gguf`] }));
  const containers = Array.from({ length: 50 }, (_, i) => ({ name: `c-${i}`, image: `registry.example/r${i}`, tag: '1', digest: `sha256:${'b'.repeat(64)}`, env: { I: String(i) }, command: [], ports: [], restart: 'always' }));
  const large = net.sign(agent.devSnapshot({ network: 'benchnet', sequence: 1, models, containers }));
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
    'new snapshot applied (ms)': stats(newSamples),
    [`verify ${large.bytes.byteLength} B envelope (ms)`]: stats(verify),
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await rm(work, { recursive: true, force: true });
}
