import type { AuditEntry, AuditHead, AuditSink, AuditType } from './audit.js';
import { AgentError } from './errors.js';
import type { LatestResult, Origin } from './origin-client.js';
import type {
  ApplierPort,
  ApplyTarget,
  CollectResult,
  DroppedMirrors,
  ExecuteResult,
  StoreUsage,
  NotifyResult,
  ObservedNode,
  PlanResult,
  PlannedApply,
  RuntimeEnvironment,
  RuntimeNotifier,
} from './ports.js';

/** An in-memory origin for unit tests of the sync logic. */
export class FakeOrigin implements Origin {
  latestHint: { config_digest: string; sequence: number } | null = null;
  etag = 0;
  snapshots = new Map<string, Uint8Array>();
  roots = new Map<number, Uint8Array>();
  down = false;
  snapshotFetches = 0;
  heartbeats: Record<string, unknown>[] = [];

  publish(digest: string, sequence: number, bytes: Uint8Array): void {
    this.snapshots.set(digest, bytes);
    this.latestHint = { config_digest: digest, sequence };
    this.etag += 1;
  }

  etagsSent: (string | null)[] = [];

  async latest(etag: string | null): Promise<LatestResult> {
    this.etagsSent.push(etag);
    if (this.down) throw new AgentError('FETCH_FAILED', 'connect ECONNREFUSED 127.0.0.1');
    if (this.latestHint === null) throw new AgentError('HTTP_STATUS', 'expected 200 or 304, got 404');
    const current = `"${this.etag}"`;
    if (etag === current) return { status: 'not-modified' };
    return { status: 'ok', hint: this.latestHint, etag: current, bytes: 80 };
  }

  async snapshot(digest: string): Promise<Uint8Array> {
    if (this.down) throw new AgentError('FETCH_FAILED', 'connect ECONNREFUSED 127.0.0.1');
    this.snapshotFetches += 1;
    const bytes = this.snapshots.get(digest);
    if (!bytes) throw new AgentError('HTTP_STATUS', 'expected 200, got 404');
    return bytes;
  }

  async root(version: number): Promise<Uint8Array | null> {
    return this.roots.get(version) ?? null;
  }

  heartbeatDown = false;

  async heartbeat(body: Record<string, unknown>): Promise<void> {
    if (this.down || this.heartbeatDown) throw new AgentError('FETCH_FAILED', 'down');
    this.heartbeats.push(body);
  }
}

/** An applier that "runs" a target by remembering it; failures are scripted per digest. */
export class FakeApplier implements ApplierPort {
  running: ApplyTarget | null = null;
  executed: string[] = [];
  failWith = new Map<string, { code: string; rolledBack: boolean; retryable?: boolean }>();
  /** When set, execute waits on this (for cancellation tests). */
  gate: Promise<void> | null = null;
  /** When set, only the apply of this digest waits on the gate. */
  gateOnly: string | null = null;

  async plan(target: ApplyTarget): Promise<PlanResult> {
    const same = this.running?.digest === target.digest;
    const lines = same ? [] : [`switch ${this.running?.digest ?? 'nothing'} -> ${target.digest}`];
    const steps: PlannedApply['steps'] = same ? [] : [{ kind: 'set-flags', flags: { mode: target.snapshot.participation.mode, subclouds: [] } }];
    return { ok: true, plan: { target, steps, lines } };
  }

  async execute(plan: PlannedApply, options: { signal?: AbortSignal }): Promise<ExecuteResult> {
    this.executed.push(plan.target.digest);
    if (this.gate && (this.gateOnly === null || this.gateOnly === plan.target.digest)) {
      const signal = options.signal;
      const aborted = await Promise.race([
        this.gate.then(() => false),
        new Promise<boolean>((resolve) => {
          if (signal?.aborted) resolve(true);
          signal?.addEventListener('abort', () => resolve(true), { once: true });
        }),
      ]);
      if (aborted) return { ok: false, failure: { code: 'ABORTED', message: 'fake ABORTED', retryable: true, rolledBack: true, cancelled: true } };
    }
    const failure = this.failWith.get(plan.target.digest);
    if (failure) {
      if (!failure.rolledBack) this.running = plan.target;
      return {
        ok: false,
        failure: {
          code: failure.code,
          message: `fake ${failure.code}`,
          retryable: failure.retryable ?? false,
          rolledBack: failure.rolledBack,
          cancelled: false,
        },
      };
    }
    this.running = plan.target;
    const dropped = this.dropMirrors.splice(0);
    return { ok: true, durationMs: 1, steps: plan.steps.length, ...(dropped.length > 0 ? { droppedMirrors: dropped } : {}) };
  }

  async environment(target: ApplyTarget): Promise<RuntimeEnvironment> {
    return {
      digest: target.digest,
      sequence: target.snapshot.sequence,
      job: target.snapshot.job,
      models: target.snapshot.models.map((m) => ({ name: m.name, version: m.version, sha256: m.sha256, path: `/models/${m.sha256}` })),
      participation: { mode: target.snapshot.participation.mode, subclouds: [] },
    };
  }

  async observe(): Promise<ObservedNode> {
    return { containers: [], models: [], flags: null };
  }

  async flags(target: ApplyTarget) {
    return { mode: target.snapshot.participation.mode, subclouds: [] };
  }

  /** What collect was asked to keep, per call (digests). */
  collected: string[][] = [];
  /** What the next collect reports as removed. */
  collectable: CollectResult = { removed: [], bytesFreed: 0, failed: [] };
  /** Mirrors the next successful execute reports as dropped. */
  dropMirrors: DroppedMirrors[] = [];

  async storeUsage(): Promise<StoreUsage | null> {
    return { bytes: 100, collectable: { bytes: this.collectable.bytesFreed, count: this.collectable.removed.length } };
  }

  async collect(keep: readonly ApplyTarget[]): Promise<CollectResult> {
    this.collected.push(keep.map((t) => t.digest));
    const result = this.collectable;
    this.collectable = { removed: [], bytesFreed: 0, failed: [] };
    return result;
  }
}

/** A runtime that ACKs, or NACKs the digests it is told to. */
export class FakeNotifier implements RuntimeNotifier {
  nack = new Set<string>();
  told: RuntimeEnvironment[] = [];

  async notify(env: RuntimeEnvironment): Promise<NotifyResult> {
    this.told.push(env);
    const ok = !this.nack.has(env.digest);
    return {
      outcome: ok ? 'ack' : 'nack',
      acks: [{ runtimeId: 'rt-1', digest: env.digest, ok, ...(ok ? {} : { code: 'MODEL_LOAD_FAILED', message: 'cannot load' }) }],
      ...(ok ? {} : { code: 'MODEL_LOAD_FAILED', message: 'cannot load' }),
    };
  }

  connected() {
    return [{ runtimeId: 'rt-1', digest: this.told.at(-1)?.digest ?? null }];
  }

  async close() {}
}

/** Audit entries kept in memory. */
export class MemoryAudit implements AuditSink {
  entries: AuditEntry[] = [];
  head(): AuditHead | null {
    return this.entries.length === 0 ? null : { index: this.entries.length - 1, hash: String(this.entries.length - 1).padStart(64, '0') };
  }
  async append(type: AuditType, data: Record<string, unknown>): Promise<AuditEntry> {
    const entry = { seq: this.entries.length, time: new Date(0).toISOString(), type, prev: '', ...data };
    this.entries.push(entry);
    return entry;
  }
  types(): string[] {
    return this.entries.map((e) => e.type);
  }
}
