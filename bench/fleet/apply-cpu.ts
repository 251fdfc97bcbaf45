// The CPU one warm Agent spends on one apply, from the long-poll's answer to `applied`: one
// `resultity-agent run` (no containers, runtime bridge on and a stand-in runtime connected,
// long-poll against the dev origin, spread 0) and a series of publishes. CPU is the sum of the
// on-CPU time of all the Agent's threads (/proc/<pid>/task/*/schedstat, nanoseconds) from just
// before a publish to the `applied` entry, less what the same Agent spends idle over as long.
//
//   pnpm build
//   node --import tsx bench/fleet/apply-cpu.ts --rounds 40 --work-base /dev/shm
//   ... --cpu-prof DIR   (the Agent runs with --cpu-prof; the profile is written to DIR on exit)
//   ... --agent-cli PATH (another build's apps/agent/dist/cli.js, for an A/B under the same load)
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';

import { freePort, percentile, waitFor } from './lib.js';

const root = new URL('../../', import.meta.url).pathname;
const agentCli0 = join(root, 'apps/agent/dist/cli.js');
const snapshotCli = join(root, 'packages/snapshot/dist/cli.js');
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '40' },
    'work-base': { type: 'string', default: tmpdir() },
    'cpu-prof': { type: 'string' },
    // Another build of the Agent (e.g. a checkout of an earlier commit), to compare under the same load.
    'agent-cli': { type: 'string' },
    out: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const agentCli = values['agent-cli'] ?? agentCli0;

/** On-CPU nanoseconds of every thread of `pid` (the main thread, libuv's pool, V8's helpers). */
async function cpuNs(pid: number): Promise<number> {
  let total = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const text = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').catch(() => '0');
    total += Number(text.split(' ')[0]);
  }
  return total;
}

const work = join(values['work-base'] ?? tmpdir(), `fleet-apply-cpu-${process.pid}`);
const children: ChildProcess[] = [];
try {
  await mkdir(work, { recursive: true });
  const net = await createDevNetwork(join(work, 'net'), 'benchnet');
  const snapshot = (sequence: number) => {
    const s = devSnapshot({ network: 'benchnet', sequence, pollSeconds: 600, maxTokens: 1000 + sequence });
    return { ...s, ttl: { ...s.ttl, heartbeat_interval_s: 3600 } };
  };
  await net.publish(snapshot(1));
  const port = await freePort();
  children.push(spawn(process.execPath, [snapshotCli, 'serve', '--origin', net.originDir, '--port', String(port)], { stdio: 'ignore' }));
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the dev origin', async () => (await fetch(`${url}/v1/benchnet/latest.json`)).ok, 10_000);

  const stateDir = join(work, 'state');
  const config = await writeAgentConfig(join(work, 'agent.json'), {
    network: 'benchnet',
    origin: url,
    node_id: 'bench-0',
    trust_root: [net.rootFile],
    state_dir: stateDir,
    bridge: { enabled: true, ack_timeout_ms: 10_000 },
    status: { listen: null },
    docker: { socket_path: join(work, 'no-docker.sock') },
    long_poll: { enabled: true, spread_ms: 0 },
    log_level: 'warn',
  });
  const prof = values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-interval', '250', '--cpu-prof-dir', values['cpu-prof']] : [];
  const agent = spawn(process.execPath, [...prof, agentCli, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(agent);
  const pid = agent.pid as number;
  const sequenceOf = async () => {
    try {
      return (JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as { applied: { sequence: number } | null }).applied?.sequence ?? null;
    } catch {
      return null;
    }
  };
  await waitFor('the Agent on snapshot 1', async () => (await sequenceOf()) === 1, 60_000);
  const standin = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/fleet/runtime-standin.ts'), stateDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: join(root, 'bench'),
  });
  children.push(standin);
  await new Promise<void>((resolve) => standin.stdout?.on('data', (d: Buffer) => d.toString().includes('connected') && resolve()));
  await new Promise((r) => setTimeout(r, 2000));

  // Idle: what the Agent spends holding its long-poll over a second, to take off each apply's figure.
  const idle0 = await cpuNs(pid);
  await new Promise((r) => setTimeout(r, 5000));
  const idleNsPerMs = ((await cpuNs(pid)) - idle0) / 5000;

  const perApply: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const sequence = round + 2;
    const before = await cpuNs(pid);
    const t0 = Date.now();
    const published = await net.publish(snapshot(sequence));
    await waitFor(
      `snapshot ${sequence} applied`,
      async () => (await readFile(join(stateDir, 'audit.jsonl'), 'utf8')).includes(`"applied","digest":"${published.digest}`),
      30_000,
      5,
    );
    const spent = (await cpuNs(pid)) - before - idleNsPerMs * (Date.now() - t0);
    perApply.push(spent / 1e6);
    // Let the Agent finish what follows an apply (its next long-poll) before the next publish.
    await new Promise((r) => setTimeout(r, 300));
  }
  const warm = perApply.slice(2);
  const result = {
    node: process.version,
    agent: agentCli,
    rounds,
    idle_cpu_ms_per_s: +((idleNsPerMs * 1000) / 1e6).toFixed(3),
    first_two_ms: perApply.slice(0, 2).map((x) => +x.toFixed(2)),
    warm_cpu_ms: { n: warm.length, p50: +percentile(warm, 50).toFixed(2), p90: +percentile(warm, 90).toFixed(2), max: +Math.max(...warm).toFixed(2) },
  };
  console.log(JSON.stringify(result));
  if (values.out) await writeFile(values.out, JSON.stringify({ ...result, samples: perApply }));
} finally {
  for (const child of children.reverse()) if (child.exitCode === null) child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1500));
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await rm(work, { recursive: true, force: true });
}
