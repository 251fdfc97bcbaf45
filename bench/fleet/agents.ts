// Publish → applied and publish → runtime ACK across N real Agent processes on loopback.
//
// Each Agent is `resultity-agent run` with its own state directory and runtime bridge (a unix
// socket in its state directory); one stand-in process (runtime-standin.ts) holds a real
// runtime-bridge connection to every Agent and ACKs each environment. The snapshots carry no
// containers and no models, and the Agents are pointed at no Docker engine, so an apply is
// the Agent's own work: latest.json, the envelope, verification, plan, journal, state, bridge.
//
//   pnpm install --offline && pnpm build
//   cd bench
//   node --import tsx fleet/agents.ts --agents 100 --origin dev --rounds 10 --work-base /dev/shm
//   node --import tsx fleet/agents.ts --agents 100 --origin nginx --poll-s 5 --rounds 5 --work-base /dev/shm
//   ... --spread-ms 0   (no spread: what the origin sees without it)
//   (or: pnpm --filter @resultity/bench fleet:agents)
//
// Latencies are from the start of the publish call (signing and writing included) to the
// Agent's audit entries `runtime-ack` and `applied` (the Agent's clock; one machine). Against
// the dev origin (dev-origin.ts) the origin's side of each burst is recorded as well.
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { startNginx } from '@resultity/testkit';
import { createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';

import { freePort, percentile, waitFor } from './lib.js';

const root = new URL('../../', import.meta.url).pathname;
const agentCli = join(root, 'apps/agent/dist/cli.js');

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '100' },
    origin: { type: 'string', default: 'dev' },
    rounds: { type: 'string', default: '10' },
    'poll-s': { type: 'string', default: '5' },
    'spread-ms': { type: 'string', default: '100' },
    // /tmp by default (the disk, every state write fsync'd); /dev/shm takes the disk out of what is measured.
    'work-base': { type: 'string', default: tmpdir() },
    out: { type: 'string' },
  },
});
const N = Number(values.agents);
const rounds = Number(values.rounds);
const kind = values.origin as 'dev' | 'nginx';
const pollS = kind === 'dev' ? 600 : Number(values['poll-s']);
const spreadMs = Number(values['spread-ms']);

const work = join(values['work-base'] ?? tmpdir(), `fleet-agents-${process.pid}`);
const children: ChildProcess[] = [];
let nginx: { url: string; pid: number; close(): Promise<void> } | null = null;

function snapshot(sequence: number) {
  const s = devSnapshot({ network: 'benchnet', sequence, pollSeconds: pollS, maxTokens: 1000 + sequence });
  // No heartbeats in the way of what is measured.
  return { ...s, ttl: { ...s.ttl, heartbeat_interval_s: 3600, retry_initial_ms: 500, retry_max_ms: 5000 } };
}

async function appliedOf(stateDir: string): Promise<number | null> {
  try {
    return (JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as { applied: { sequence: number } | null }).applied?.sequence ?? null;
  } catch {
    return null;
  }
}

/** On-CPU milliseconds of a process so far: user + system from /proc/<pid>/stat, in 10 ms ticks. */
async function cpuMsOf(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** Time of the audit entries of type `type` for `digest`. */
async function auditTime(stateDir: string, type: string, digest: string): Promise<number | null> {
  const lines = (await readFile(join(stateDir, 'audit.jsonl'), 'utf8')).split('\n');
  for (const line of lines) {
    if (!line) continue;
    const e = JSON.parse(line) as { type: string; time: string; digest?: string };
    if (e.type === type && e.digest === digest) return Date.parse(e.time);
  }
  return null;
}

const loadStart = loadavg().map((x) => +x.toFixed(2));
try {
  await mkdir(work, { recursive: true });
  const net = await createDevNetwork(join(work, 'net'), 'benchnet');
  const first = await net.publish(snapshot(1));
  let url: string;
  // The dev origin's own account every 10 ms: requests answered, held, and the most others in progress at once.
  const statsFile = join(work, 'origin-stats.jsonl');
  let originPid: number | undefined;
  if (kind === 'dev') {
    const origin = fork(join(root, 'bench/fleet/dev-origin.ts'), [net.originDir, String(await freePort()), String(N + 100), statsFile, '10'], {
      execArgv: ['--import', 'tsx'],
      cwd: join(root, 'bench'),
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    children.push(origin);
    originPid = origin.pid;
    url = await new Promise<string>((resolve) => origin.once('message', (m) => resolve((m as { url: string }).url)));
  } else {
    nginx = await startNginx({ root: net.originDir, work, connections: N * 2 + 64, defaultType: 'application/json' });
    url = nginx.url;
    originPid = nginx.pid;
  }
  const agentPids: number[] = [];

  const stateDirs: string[] = [];
  for (let i = 0; i < N; i++) {
    const dir = join(work, `agent-${i}`);
    await mkdir(dir, { recursive: true });
    const config = await writeAgentConfig(join(dir, 'agent.json'), {
      network: 'benchnet',
      origin: url,
      node_id: `bench-${i}`,
      trust_root: [net.rootFile],
      state_dir: join(dir, 'state'),
      bridge: { enabled: true, ack_timeout_ms: 10_000 },
      status: { listen: null },
      docker: { socket_path: join(dir, 'no-docker.sock') },
      long_poll: { enabled: true, spread_ms: spreadMs },
      log_level: 'warn',
    });
    stateDirs.push(join(dir, 'state'));
    const child = spawn(process.execPath, [agentCli, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(child);
    agentPids.push(child.pid as number);
    // Starting a hundred Node processes at once on two cores only makes each start slower.
    await new Promise((r) => setTimeout(r, 150));
  }
  await waitFor('every Agent on snapshot 1', async () => (await Promise.all(stateDirs.map(appliedOf))).every((s) => s === 1), 300_000);

  // One stand-in process holds a runtime bridge to every Agent and ACKs what it is sent.
  const standin = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/fleet/runtime-standin.ts'), ...stateDirs], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: join(root, 'bench'),
  });
  children.push(standin);
  await new Promise<void>((resolve, reject) => {
    standin.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('connected')) resolve();
    });
    standin.once('exit', () => reject(new Error('the runtime stand-in exited')));
  });

  const applied: number[] = [];
  const acked: number[] = [];
  const publishMs: number[] = [];
  const publishedAt: number[] = [];
  // Where the two cores went in each round, from before the publish to the last entry read: the
  // Agents (summed), the origin, the stand-in and this harness (which reads state files while it waits).
  const cpuRounds: { agents_ms: number; origin_ms: number; standin_ms: number; harness_ms: number; wall_ms: number }[] = [];
  const cpuNow = async () => {
    const agents = await Promise.all(agentPids.map(cpuMsOf));
    const harness = process.cpuUsage();
    return {
      agents: agents.reduce((a, b) => a + b, 0),
      origin: await cpuMsOf(originPid),
      standin: await cpuMsOf(standin.pid),
      harness: (harness.user + harness.system) / 1000,
      at: Date.now(),
    };
  };
  for (let round = 0; round < rounds; round++) {
    const sequence = round + 2;
    // nginx's ETag is mtime and size; whole seconds apart keeps every publish visible.
    if (kind === 'nginx') await new Promise((r) => setTimeout(r, 1100));
    // From before the publish (signing and the fsync'd writes included, so latencies err long):
    // publish sets latest.json's mtime a second past the previous one, so mtime is no clock.
    const cpuBefore = await cpuNow();
    const t0 = Date.now();
    const published = await net.publish(snapshot(sequence));
    publishMs.push(Date.now() - t0);
    publishedAt.push(t0);
    // Polled slowly: the latencies come from the Agents' audit entries, not from when they are
    // read, and every read here is CPU taken from the Agents being measured.
    await waitFor(`every Agent on snapshot ${sequence}`, async () => (await Promise.all(stateDirs.map(appliedOf))).every((s) => s === sequence), 120_000, 500);
    for (const dir of stateDirs) {
      // state.json can be written a moment before the audit entry that closes the apply.
      let a: number | null = null;
      let k: number | null = null;
      await waitFor(
        `${dir}: the applied and runtime-ack entries of ${published.digest}`,
        async () => {
          a = await auditTime(dir, 'applied', published.digest);
          k = await auditTime(dir, 'runtime-ack', published.digest);
          return a !== null && k !== null;
        },
        30_000,
      );
      applied.push((a as unknown as number) - t0);
      acked.push((k as unknown as number) - t0);
    }
    const cpuAfter = await cpuNow();
    cpuRounds.push({
      agents_ms: cpuAfter.agents - cpuBefore.agents,
      origin_ms: cpuAfter.origin - cpuBefore.origin,
      standin_ms: cpuAfter.standin - cpuBefore.standin,
      harness_ms: Math.round(cpuAfter.harness - cpuBefore.harness),
      wall_ms: cpuAfter.at - cpuBefore.at,
    });
    console.error(`round ${round + 1}/${rounds}: p50 applied ${percentile(applied, 50).toFixed(0)} ms, p99 ${percentile(applied, 99).toFixed(0)} ms`);
  }
  void first;
  // For looking into where the time goes: the last round's audit entries of the first Agent.
  if (process.env.FLEET_DUMP_AUDIT) console.error((await readFile(join(stateDirs[0] ?? '', 'audit.jsonl'), 'utf8')).split('\n').slice(-12).join('\n'));
  const summary = (xs: number[]) => ({
    n: xs.length,
    p50: +percentile(xs, 50).toFixed(1),
    p90: +percentile(xs, 90).toFixed(1),
    p99: +percentile(xs, 99).toFixed(1),
    max: +Math.max(...xs).toFixed(1),
  });
  // What the burst after each publish cost the dev origin: the most requests (other than held
  // waits) in progress at once, and the most answered in one 10 ms slice, within 2 s of the publish.
  let origin: {
    inflight_max_p50: number;
    inflight_max_max: number;
    answered_per_10ms_max: number;
    by_round: { inflight_max: number; per_10ms_max: number }[];
  } | null = null;
  if (kind === 'dev') {
    await new Promise((r) => setTimeout(r, 100));
    const stats = (await readFile(statsFile, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { t: number; inflight_max: number; counts: Record<string, number> });
    const byRound = publishedAt.map((t0) => {
      const window = stats.filter((x) => x.t >= t0 && x.t < t0 + 2000);
      return {
        inflight_max: Math.max(0, ...window.map((x) => x.inflight_max)),
        per_10ms_max: Math.max(0, ...window.map((x) => Object.entries(x.counts).reduce((a, [k, n]) => a + (k === 'wait' ? 0 : n), 0))),
      };
    });
    origin = {
      inflight_max_p50: percentile(
        byRound.map((r) => r.inflight_max),
        50,
      ),
      inflight_max_max: Math.max(...byRound.map((r) => r.inflight_max)),
      answered_per_10ms_max: Math.max(...byRound.map((r) => r.per_10ms_max)),
      by_round: byRound,
    };
  }
  const medianOf = (key: keyof (typeof cpuRounds)[number]) =>
    percentile(
      cpuRounds.map((r) => r[key]),
      50,
    );
  const result = {
    node: process.version,
    loadavg_start_end: [loadStart, loadavg().map((x) => +x.toFixed(2))],
    agents: N,
    work: values['work-base'],
    origin: kind,
    poll_s: kind === 'nginx' ? pollS : null,
    spread_ms: spreadMs,
    rounds,
    applied_ms: summary(applied),
    runtime_ack_ms: summary(acked),
    publish_call_ms: summary(publishMs),
    origin_burst: origin,
    // Medians over the rounds; agents_per_apply_ms is the Agents' sum divided by the Agents.
    cpu_per_round_ms: {
      agents: medianOf('agents_ms'),
      agents_per_apply: +(medianOf('agents_ms') / N).toFixed(1),
      origin: medianOf('origin_ms'),
      standin: medianOf('standin_ms'),
      harness: medianOf('harness_ms'),
      wall: medianOf('wall_ms'),
    },
  };
  console.log(JSON.stringify(result));
  if (values.out) await writeFile(values.out, JSON.stringify({ ...result, samples: { applied, acked, cpu_rounds: cpuRounds } }));
} finally {
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1000));
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await nginx?.close();
  await rm(work, { recursive: true, force: true });
}
