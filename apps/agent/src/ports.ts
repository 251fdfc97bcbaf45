import type { Step } from '@resultity/applier';
import type { RuntimeEnvironment } from '@resultity/bridge-protocol';
import type { Snapshot } from '@resultity/snapshot';

/** A snapshot the Agent means to run: the verified content and its digest. */
export interface ApplyTarget {
  readonly snapshot: Snapshot;
  readonly digest: string;
}

/** Steps computed for one apply: the applier's steps (data), and one printable line per step for `plan` and the audit log. */
export interface PlannedApply {
  readonly target: ApplyTarget;
  readonly steps: readonly Step[];
  readonly lines: readonly string[];
}

/**
 * Why a plan or an execute did not succeed, as the sync loop needs to know it: the stable
 * code, whether trying again later may succeed without anything else changing (a transient
 * failure spends no retry budget), whether the previous state was put back, and whether it
 * ended because the work was cancelled.
 */
export interface ApplyFailure {
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
  readonly rolledBack: boolean;
  readonly cancelled: boolean;
  /**
   * What each mirror of a failed model download did wrong (host, status, sizes). For the local
   * audit log only: it never reaches last_error, the heartbeat or /status.
   */
  readonly mirrors?: readonly { readonly index: number; readonly code: string; readonly detail: string }[];
}

/** The outcome of planning: the plan, or why there is none. */
export type PlanResult = { readonly ok: true; readonly plan: PlannedApply } | { readonly ok: false; readonly failure: ApplyFailure };

/**
 * A mirror given up on during a model download that another mirror completed. `detail` names the
 * host: for the local audit log only, like ApplyFailure's `mirrors`.
 */
export interface DroppedMirrors {
  readonly model: string;
  readonly mirrors: readonly { readonly index: number; readonly code: string; readonly detail: string }[];
}

/** The outcome of executing a plan. */
export type ExecuteResult =
  | { readonly ok: true; readonly durationMs: number; readonly steps: number; readonly droppedMirrors?: readonly DroppedMirrors[] }
  | { readonly ok: false; readonly failure: ApplyFailure };

/** A download's progress, shown on a terminal and in logs. */
export interface ProgressInfo {
  readonly kind: 'model' | 'image';
  readonly name: string;
  readonly bytesDone: number;
  readonly bytesTotal: number | null;
  /** A model download's average rate so far. */
  readonly bytesPerSecond?: number;
  /** A chunked model download's mirrors: verified bytes each delivered, requests in flight, and the code of one dropped. */
  readonly mirrors?: readonly {
    readonly index: number;
    readonly bytes: number;
    readonly connections: number;
    readonly failure: { readonly code: string } | null;
  }[];
}

/** The model store's size and what no kept snapshot needs, for `status`. */
export interface StoreUsage {
  readonly bytes: number;
  readonly collectable: { readonly bytes: number; readonly count: number };
}

/** What a collection removed (file names are the store's: `sha256/<hex>`, `staging/<hex>.part`…). */
export interface CollectResult {
  readonly removed: readonly { readonly file: string; readonly bytes: number }[];
  readonly bytesFreed: number;
  readonly failed: readonly { readonly file: string; readonly message: string }[];
}

/** What runs on the node now, for `status`. */
export interface ObservedNode {
  readonly containers: readonly { name: string; image: string; state: string }[];
  readonly models: readonly { name: string; version: string }[];
  readonly flags: { mode: string; subclouds: readonly string[] } | null;
}

/**
 * The applier as the sync loop needs it: plan from what really runs toward a target, execute
 * (restoring the previous state on failure, as @resultity/applier does), and describe the
 * runtime environment of a target. Plan and execute report failure as a value (ApplyFailure);
 * they throw only for bugs.
 */
export interface ApplierPort {
  plan(target: ApplyTarget, previous: ApplyTarget | null): Promise<PlanResult>;
  execute(plan: PlannedApply, options: { signal?: AbortSignal; onProgress?: (event: ProgressInfo) => void }): Promise<ExecuteResult>;
  environment(target: ApplyTarget): Promise<RuntimeEnvironment>;
  observe(): Promise<ObservedNode>;
  /** The participation flags this node would get from a snapshot (for status and heartbeats). */
  flags(target: ApplyTarget): Promise<{ mode: string; subclouds: readonly string[] }>;
  /** The store's size and what collection would remove while `keep` are the snapshots to keep; null for a store that cannot list itself. */
  storeUsage(keep: readonly ApplyTarget[]): Promise<StoreUsage | null>;
  /** Removes model files (and staged leftovers) that none of `keep` references nor the model index names. */
  collect(keep: readonly ApplyTarget[]): Promise<CollectResult>;
}

/** What the runtime is told after an apply (the runtime bridge protocol's environment). */
export type { RuntimeEnvironment } from '@resultity/bridge-protocol';

/** How the runtimes answered a new environment. `none` means no runtime is connected. */
export interface NotifyResult {
  readonly outcome: 'ack' | 'nack' | 'none';
  readonly acks: readonly { runtimeId: string; digest: string; ok: boolean; code?: string | undefined; message?: string | undefined }[];
  readonly code?: string;
  readonly message?: string;
}

/** Tells the runtime(s) of a new environment and collects their ACK/NACK. */
export interface RuntimeNotifier {
  notify(env: RuntimeEnvironment): Promise<NotifyResult>;
  connected(): readonly { runtimeId: string; digest: string | null }[];
  close(): Promise<void>;
}

/** A notifier for nodes without a runtime bridge: every apply is recorded as "no runtime". */
export function noRuntimeNotifier(reason = 'no runtime bridge'): RuntimeNotifier {
  return {
    notify: async () => ({ outcome: 'none', acks: [], message: reason }),
    connected: () => [],
    close: async () => undefined,
  };
}

/** The pino-compatible subset the Agent logs through (from @resultity/node-kit). */
export type { Logger } from '@resultity/node-kit';
export { silentLogger } from '@resultity/node-kit';

/** The metrics the loop feeds; the default adapter is prom-client. */
export interface MetricsSink {
  appliedSequence(sequence: number): void;
  syncResult(code: string): void;
  applyDuration(seconds: number): void;
  bytesDownloaded(kind: 'snapshot' | 'latest' | 'root' | 'model' | 'image', bytes: number): void;
  /** A mirror given up on during a model download, by its failure code. */
  mirrorFailure(code: string): void;
  /** Bytes a collection freed from the model store. */
  collectedBytes(bytes: number): void;
}

export const noMetrics: MetricsSink = {
  appliedSequence() {},
  syncResult() {},
  applyDuration() {},
  bytesDownloaded() {},
  mirrorFailure() {},
  collectedBytes() {},
};
