import type { RuntimeEnvironment } from '@resultity/bridge-protocol';
import type { Snapshot } from '@resultity/snapshot';

/** A snapshot the Agent means to run: the verified content and its digest. */
export interface ApplyTarget {
  readonly snapshot: Snapshot;
  readonly digest: string;
}

/** Steps computed for one apply: opaque to the sync loop, printable for `plan` and the audit log. */
export interface PlannedApply {
  readonly target: ApplyTarget;
  readonly steps: readonly unknown[];
  readonly lines: readonly string[];
}

/** A download's progress, shown on a terminal and in logs. */
export interface ProgressInfo {
  readonly kind: 'model' | 'image';
  readonly name: string;
  readonly bytesDone: number;
  readonly bytesTotal: number | null;
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
 * runtime environment of a target. Errors carry a stable `code` and `rolledBack`.
 */
export interface ApplierPort {
  plan(target: ApplyTarget, previous: ApplyTarget | null): Promise<PlannedApply>;
  execute(plan: PlannedApply, options: { signal?: AbortSignal; onProgress?: (event: ProgressInfo) => void }): Promise<{ durationMs: number; steps: number }>;
  environment(target: ApplyTarget): RuntimeEnvironment;
  observe(): Promise<ObservedNode>;
  /** The participation flags this node would get from a snapshot (for status and heartbeats). */
  flags(target: ApplyTarget): { mode: string; subclouds: readonly string[] };
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
}

export const noMetrics: MetricsSink = { appliedSequence() {}, syncResult() {}, applyDuration() {}, bytesDownloaded() {} };
