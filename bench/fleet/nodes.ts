// A worker of the 10,000-node simulation: many simulated nodes in one process, each the
// Agent's real sync code (SyncEngine and the Daemon with its timers, jitter and long-poll,
// the real HTTP origin client on node:http, real verification, a real state directory).
// Only ports are fakes: an applier that runs nothing (the snapshots have no containers and no
// models), no runtime bridge, an audit sink in memory (the audit log's fsync per entry is the
// file system's cost, not the fleet's).
//
// Started by fleet.ts with IPC; not meant to be run by hand.
import { cp, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ApplierPort, ApplyTarget, AuditEntry, AuditSink, AuditType } from '../../apps/agent/src/index.js';

type AgentLib = typeof import('../../apps/agent/src/index.js');
const agent = (await import(new URL('../../apps/agent/dist/index.js', import.meta.url).href)) as AgentLib;

interface Start {
  readonly origin: string;
  readonly network: string;
  readonly rootFile: string;
  readonly stateBase: string;
  readonly first: number;
  readonly count: number;
  readonly startWithinMs: number;
  readonly longPoll: boolean;
  readonly spreadMs: number;
  readonly target: number;
  readonly pollS: number;
  /** Seed every node's state directory with the snapshot named by latest.json already applied (one apply, copied). */
  readonly seeded: boolean;
}

const ApplierRunsNothing: ApplierPort = {
  async plan(target: ApplyTarget) {
    return { ok: true as const, plan: { target, steps: [], lines: [] } };
  },
  async execute() {
    return { ok: true as const, durationMs: 0, steps: 0 };
  },
  async environment(target: ApplyTarget) {
    return {
      digest: target.digest,
      sequence: target.snapshot.sequence,
      job: target.snapshot.job,
      models: [],
      participation: { mode: target.snapshot.participation.mode, subclouds: [] },
    };
  },
  async observe() {
    return { containers: [], models: [], flags: null };
  },
  async flags(target: ApplyTarget) {
    return { mode: target.snapshot.participation.mode, subclouds: [] };
  },
};

class CountingAudit implements AuditSink {
  private n = 0;
  head() {
    return this.n === 0 ? null : { index: this.n - 1, hash: '0'.repeat(64) };
  }
  async append(type: AuditType, data: Record<string, unknown>): Promise<AuditEntry> {
    return { seq: this.n++, time: '', type, prev: '', ...data };
  }
}

/** FLEET_DEBUG=1: the first node of each worker logs to stderr. */
const debugLogger = {
  ...agent.silentLogger,
  info: (o: unknown, m?: string) => console.error('info', m, JSON.stringify(o)),
  warn: (o: unknown, m?: string) => console.error('warn', m, JSON.stringify(o)),
  error: (o: unknown, m?: string) => console.error('error', m, JSON.stringify(o)),
};

let target = -1;
const appliedAt = new Map<number, number>();
const daemons: InstanceType<AgentLib['Daemon']>[] = [];

async function start(s: Start): Promise<void> {
  // Nodes started early apply while later ones are still being built: count from the start.
  target = s.target;
  const root = new Uint8Array(await readFile(s.rootFile));
  // The configuration's timers (used until a snapshot is applied, and for the poll that follows that apply).
  const fallback = { poll_interval_s: s.pollS, heartbeat_interval_s: 86_400, retry_initial_ms: 1000, retry_max_ms: 300_000, jitter: 0.1 };
  const build = (id: number, dir: string, metrics: typeof agent.noMetrics) => {
    const origin = agent.createHttpOrigin({ baseUrl: s.origin, network: s.network, nodeId: `sim-${id}`, timeoutMs: 30_000, maxBytes: 4 << 20 });
    const engine = new agent.SyncEngine({
      network: s.network,
      nodeId: `sim-${id}`,
      retryBudget: 5,
      maxSnapshotBytes: 4 << 20,
      agentVersion: '0.0.0-sim',
      trustRoots: [root],
      origin,
      applier: ApplierRunsNothing,
      notifier: agent.noRuntimeNotifier('simulated node'),
      store: new agent.StateStore(dir, 2),
      audit: new CountingAudit(),
      clock: () => new Date(),
      logger: agent.silentLogger,
      metrics,
    });
    return { origin, engine };
  };
  // A fleet that has run for a while has every node on the current snapshot at a random phase.
  // Applying it first in every simulated node would queue 5,000 applies on this process's CPU,
  // and the nodes' phases would follow that queue instead of being random: so one node applies
  // it and every node starts from a copy of that state directory.
  const template = join(s.stateBase, `template-${s.first}`);
  if (s.seeded) {
    await mkdir(template, { recursive: true });
    const seeded = await build(-1, template, agent.noMetrics).engine.syncOnce();
    if (seeded.result !== 'applied') throw new Error(`seeding the state directories: ${JSON.stringify(seeded)}`);
    if (seeded.sequence === target) for (let i = 0; i < s.count; i++) appliedAt.set(s.first + i, Date.now());
  }
  for (let i = 0; i < s.count; i++) {
    const id = s.first + i;
    const dir = join(s.stateBase, `n${id}`);
    if (s.seeded) await cp(template, dir, { recursive: true });
    else await mkdir(dir, { recursive: true });
    const metrics = {
      ...agent.noMetrics,
      appliedSequence(sequence: number) {
        if (sequence === target && !appliedAt.has(id)) appliedAt.set(id, Date.now());
      },
    };
    const { origin, engine } = build(id, dir, metrics);
    const daemon = new agent.Daemon({
      engine,
      origin,
      logger: process.env.FLEET_DEBUG && i === 0 ? debugLogger : agent.silentLogger,
      metrics,
      timers: async () => agent.timersFrom((await engine.appliedTarget())?.snapshot ?? null, fallback),
      longPoll: s.longPoll ? { waitS: 30, spreadMs: s.spreadMs, recheckMs: 600_000 } : null,
    });
    daemons.push(daemon);
    // A fleet that has run for a while polls at random phases: each node starts somewhere in one interval.
    setTimeout(() => void daemon.start(), Math.random() * s.startWithinMs);
  }
}

process.on('message', (m: { kind: string; sequence?: number }) => {
  if (m.kind === 'start') void start(m as unknown as Start).then(() => process.send?.({ kind: 'started' }));
  if (m.kind === 'target') {
    target = m.sequence ?? -1;
    appliedAt.clear();
  }
  if (m.kind === 'report') {
    const mem = process.memoryUsage();
    process.send?.({ kind: 'report', applied: [...appliedAt.values()], rss: mem.rss, cpu: process.cpuUsage() });
  }
  if (m.kind === 'stop') void Promise.all(daemons.map((d) => d.stop())).then(() => process.exit(0));
});
