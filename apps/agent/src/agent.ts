import { chmod, mkdir } from 'node:fs/promises';

import { readFileBounded } from '@resultity/node-kit';
import type { UpdateTarget } from '@resultity/snapshot';
import { destination, pino } from 'pino';

import { AuditLog } from './audit.js';
import type { AgentConfig } from './config.js';
import { SyncEngine } from './engine.js';
import { AgentError } from './errors.js';
import { createMetrics } from './metrics.js';
import { type Origin, createHttpOrigin } from './origin-client.js';
import type { ApplierPort, Logger, ProgressInfo, RuntimeNotifier } from './ports.js';
import { type LoopTimers, timersFrom } from './schedule.js';
import { StateStore } from './state.js';
import { AGENT_VERSION } from './version.js';

/** Everything an Agent process is made of, built from one configuration. */
export interface AgentParts {
  readonly config: AgentConfig;
  readonly logger: Logger & { flush?: () => void };
  readonly store: StateStore;
  readonly audit: AuditLog;
  readonly origin: Origin;
  readonly engine: SyncEngine;
  readonly metrics: ReturnType<typeof createMetrics>;
  readonly timers: () => Promise<LoopTimers>;
}

/** The adapters an Agent is built with: the applier and notifier always, the rest when a caller has its own. */
export interface BuildOptions {
  readonly applier: ApplierPort;
  readonly notifier: RuntimeNotifier;
  readonly logger?: Logger;
  readonly clock?: () => Date;
  readonly onProgress?: (event: ProgressInfo) => void;
  /** The daemon's self-updater, told of each verified `updates.agent`. */
  readonly onAgentUpdate?: (update: UpdateTarget, seenIn: string) => void;
  readonly origin?: Origin;
  /**
   * For commands that do not hold the state directory's lock (status, plan, history): a
   * corrupt state.json is reported, never rebuilt, since the lock holder may be rebuilding it.
   */
  readonly readOnly?: boolean;
}

/** The default pino logger: JSON lines, one field set per Agent. */
export function createLogger(config: AgentConfig, fd: 1 | 2 = 1): Logger {
  return pino({ level: config.log_level, base: { node_id: config.node_id, network: config.network } }, destination({ dest: fd, sync: true }));
}

/** A root envelope holds a few keys; anything near this size is not one. */
const TRUST_ROOT_FILE_LIMIT = 1024 * 1024;

export async function readTrustRoots(config: AgentConfig): Promise<Uint8Array[]> {
  return Promise.all(
    config.trust_root.map(async (file) => {
      try {
        return await readFileBounded(file, TRUST_ROOT_FILE_LIMIT);
      } catch (cause) {
        throw new AgentError('CONFIG_INVALID', `trust_root: ${(cause as Error).message}`, { cause });
      }
    }),
  );
}

/** Builds the parts; I/O adapters come in through `options` so tests and the CLI choose them. */
export async function buildAgent(config: AgentConfig, options: BuildOptions): Promise<AgentParts> {
  await mkdir(config.state_dir, { recursive: true, mode: 0o700 });
  await chmod(config.state_dir, 0o700).catch(() => undefined);
  const clock = options.clock ?? (() => new Date());
  const logger = options.logger ?? createLogger(config);
  const store = new StateStore(config.state_dir, config.history_size);
  const audit = new AuditLog(store.paths.audit, clock);
  const metrics = createMetrics();
  const origin =
    options.origin ??
    createHttpOrigin({
      baseUrl: config.origin,
      network: config.network,
      nodeId: config.node_id,
      timeoutMs: config.limits.request_timeout_ms,
      maxBytes: config.limits.max_snapshot_bytes,
      userAgent: `resultity-agent/${AGENT_VERSION}`,
    });
  const trustRoots = await readTrustRoots(config);
  const engine = new SyncEngine({
    network: config.network,
    nodeId: config.node_id,
    retryBudget: config.retry_budget,
    maxSnapshotBytes: config.limits.max_snapshot_bytes,
    agentVersion: AGENT_VERSION,
    trustRoots,
    origin,
    applier: options.applier,
    notifier: options.notifier,
    store,
    audit,
    clock,
    logger,
    metrics: metrics.sink,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.onAgentUpdate ? { onAgentUpdate: options.onAgentUpdate } : {}),
    ...(options.readOnly ? { repairCorruptState: false } : {}),
  });
  const timers = async () => timersFrom((await engine.appliedTarget())?.snapshot ?? null, config.timers);
  return { config, logger, store, audit, origin, engine, metrics, timers };
}
