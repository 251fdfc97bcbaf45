import { chmod, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import { type BridgeAck, ensureTokenFile } from '@resultity/bridge-endpoint';

import { startBridgeNotifier } from './bridge-adapter.js';
import { buildAgent, createLogger } from './agent.js';
import { createApplierPort, modelStoreDir } from './applier-adapter.js';
import { assertPathsShared } from './host-paths.js';
import { type AgentConfig, BRIDGE_RUN_DIR, bridgeMountDir, parseListen } from './config.js';
import { Daemon } from './loop.js';
import { type ApplierPort, type Logger, type ProgressInfo, type RuntimeNotifier, noRuntimeNotifier } from './ports.js';
import { longPollFrom } from './schedule.js';
import { collectStatus } from './status.js';
import { type StatusServer, startStatusServer } from './status-server.js';
import { acquireLock } from './lock.js';
import { namespacedProcesses } from './lock-namespaces.js';
import { AGENT_VERSION } from './version.js';
import { AgentError, errorCode, errorMessage } from './errors.js';
import { dockerAgentContainers, dockerContainerLiveness, dockerSuccessors, ownContainerId } from './agent-containers.js';
import { HANDOVER_ID, HANDOVER_NAME, finishRevert, guardHandover, handOver } from './handover.js';
import {
  type HandoverRecord,
  type HandoverRole,
  clearHandover,
  decideHandover,
  handoverRole,
  readHandoverOutcome,
  readHandoverRecord,
} from './handover-record.js';
import { AuditLog, readAuditEntries } from './audit.js';
import type { HeldLock, ProcessPort } from './lock.js';
import { type AgentContainersPort, SelfUpdater, fileAttemptStore } from './self-update.js';

/** A running Agent daemon and how to stop it. */
export interface RunningAgent {
  /** Null for an Agent idle in a hand-over decided for the other one: it runs no loop. */
  readonly daemon: Daemon | null;
  readonly statusUrl: string | null;
  readonly bridgeAddress: string | null;
  stop(): Promise<void>;
}

/** The applier port every command uses, with the configuration's policy and profile. */
export function applierFor(config: AgentConfig, logger: Logger): ApplierPort {
  let warned = false;
  return createApplierPort({
    stateDir: config.state_dir,
    bridgeDir: bridgeMountDir(config),
    dockerSocketPath: config.docker.socket_path,
    allowedRegistries: config.allowed_registries,
    profile: config.profile,
    containers: config.containers,
    // A container stop outlasts this on its own terms: the engine adapter waits out the grace period.
    requestTimeoutMs: config.limits.request_timeout_ms,
    downloads: {
      allowPrivateAddresses: config.downloads.allow_private_addresses,
      minBytesPerSecond: config.downloads.min_bytes_per_second,
      rateWindowMs: config.downloads.rate_window_ms,
      ...(config.downloads.max_bytes_per_second > 0 ? { maxBytesPerSecond: config.downloads.max_bytes_per_second } : {}),
    },
    // Chunk lists come from the origin the snapshots come from (SPEC §5 chunks/{hex}.json).
    chunks: { origin: config.origin, network: config.network, connections: config.downloads.connections },
    reserveBytes: config.downloads.reserve_bytes,
    onStep: (kind, index, line) => logger.debug({ step: kind, index, line }, 'apply step'),
    onEngineUnavailable: (error) => {
      if (warned) return;
      warned = true;
      logger.warn(
        { socket: config.docker.socket_path, err: errorMessage(error) },
        'Docker engine is not reachable: snapshots with containers cannot be applied until it is',
      );
    },
  });
}

/**
 * Refuses (PATHS_NOT_SHARED) to run in a container whose data directory is not the host's
 * same path: every runtime container would get other directories than the Agent writes.
 */
export async function assertHostPaths(config: AgentConfig): Promise<void> {
  const bridge = bridgeMountDir(config);
  await assertPathsShared(config.state_dir, [...(bridge === null ? [] : [bridge]), modelStoreDir(config.state_dir)], config.containers.check_shared_paths);
}

/**
 * Wires the daemon: lock, bridge endpoint, applier, engine, loop, status server. Everything
 * decided lives elsewhere; this only connects the parts.
 */
export async function startAgent(
  config: AgentConfig,
  options: { logger?: Logger; onProgress?: (e: ProgressInfo) => void; agentContainers?: AgentContainersPort; exit?: (code: number) => void } = {},
): Promise<RunningAgent> {
  await assertHostPaths(config);
  const lockPort = namespacedProcesses(dockerContainerLiveness(config.docker.socket_path));
  const logger = options.logger ?? createLogger(config);
  const exit = options.exit ?? ((code: number) => process.exit(code));
  // A hand-over in progress decides this Agent's part before it goes near the lock: a
  // predecessor restarted mid-hand-over guards instead of failing on LOCKED, and a successor of
  // a reverted hand-over applies nothing.
  const entered = await enterHandover(config, logger, lockPort, exit);
  if (entered.kind === 'idle') return entered.agent;
  let lock = entered.lock;
  const role = entered.role;
  let notifier: RuntimeNotifier = noRuntimeNotifier('the runtime bridge is disabled in the configuration');
  // Late answers are audited once the audit log exists; until then there can be none.
  let lateAck: (ack: BridgeAck) => void = () => undefined;
  let bridgeAddress: string | null = null;
  let status: StatusServer | null = null;
  try {
    if (config.bridge.enabled) {
      const bridge = await startBridge(config, logger, (ack) => lateAck(ack));
      notifier = bridge;
      bridgeAddress = bridge.address;
      logger.info({ address: bridge.address }, 'runtime bridge endpoint listening');
    }
    const applier = applierFor(config, logger);
    // Bound once the audit log exists; a verified snapshot can only arrive after that.
    let selfUpdater: SelfUpdater | null = null;
    const parts = await buildAgent(config, {
      applier,
      notifier,
      logger,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      onAgentUpdate: (update, seenIn) => void selfUpdater?.consider(update, seenIn),
    });
    await parts.audit.append('start', { version: AGENT_VERSION, pid: process.pid });
    // The predecessor waits for this entry: written with the lock held, before this Agent applies anything.
    const own = await ownContainerId();
    if (role.kind === 'take-over') {
      await parts.audit.append('agent-takeover', { predecessor: role.record.predecessor, container: own, version: AGENT_VERSION, handover: role.record.id });
    }
    if (config.self_update.enabled && config.file !== null) {
      const agentContainers = options.agentContainers ?? dockerAgentContainers({ socketPath: config.docker.socket_path });
      // A standby run outlives an Agent killed while it waited for it (the hand-over kill campaign found them left for ever).
      if (own !== null) {
        const removed = await agentContainers.removeStandbyRuns(own).catch(() => []);
        if (removed.length > 0) logger.warn({ removed }, 'self-update: removed standby containers an earlier run of this Agent left');
      }
      selfUpdater = new SelfUpdater({
        containers: agentContainers,
        attempts: fileAttemptStore(config.state_dir),
        audit: parts.audit,
        logger,
        allowedRegistries: config.allowed_registries,
        retryBudget: config.retry_budget,
        configPath: config.file,
        standbyTimeoutMs: config.self_update.standby_timeout_ms,
        onReady: async (ready) => {
          const outcome = await handOver(
            {
              successors: dockerSuccessors(config.docker.socket_path),
              audit: parts.audit,
              attempts: fileAttemptStore(config.state_dir),
              logger,
              stateDir: config.state_dir,
              timeoutMs: config.self_update.handover_timeout_ms,
              self: ready.self.id,
              // The successor binds the same bridge socket and status address: this Agent lets
              // go of them with the loop. An apply in flight is let finish rather than cancelled.
              stopApplying: async () => {
                await daemon.idle();
                await daemon.stop();
                await notifier.close().catch(() => undefined);
                await status?.close().catch(() => undefined);
                // The successor appends to the log from here; this process holds no handle to it.
                await parts.audit.close();
              },
              releaseLock: () => lock.release(),
              retakeLock: async () => {
                lock = await acquireLockWithin(config.state_dir, lockPort, 60_000);
                // The successor may have appended while it held the lock: continue its chain, not ours.
                parts.audit.reload();
              },
            },
            ready,
          );
          // Handed over: the successor removes this container. Failed: this Agent holds the
          // lock again but its loop is stopped; it exits and its restart policy (the image
          // runs with --restart always) starts it afresh, the digest's attempt counted.
          if (outcome === 'failed') exit(75);
        },
      });
    }
    lateAck = (ack) => {
      logger.info({ runtime: ack.runtimeId, digest: ack.digest, ok: ack.ok, code: ack.code }, 'runtime answered outside an apply');
      void parts.audit
        .append(ack.ok ? 'runtime-ack' : 'runtime-nack', {
          digest: ack.digest,
          late: true,
          acks: [{ runtime: ack.runtimeId, ok: ack.ok, code: ack.code ?? null }],
        })
        .catch(() => undefined);
    };
    const daemon = new Daemon({
      engine: parts.engine,
      origin: parts.origin,
      logger,
      metrics: parts.metrics.sink,
      timers: parts.timers,
      longPoll: longPollFrom(config.long_poll),
    });
    const applied = (await parts.store.read()).applied;
    if (applied) parts.metrics.sink.appliedSequence(applied.sequence);
    if (config.status.listen !== null) {
      const listen = parseListen(config.status.listen);
      try {
        if (listen === null) throw new Error(`status.listen ${config.status.listen} is not a loopback address or a socket path`);
        // The operator's own credential, never the bridge token: a runtime reads that one.
        await mkdir(dirname(config.control.token_file), { recursive: true, mode: 0o700 });
        const token = await ensureTokenFile(config.control.token_file);
        status = await startStatusServer({
          listen,
          registry: parts.metrics.registry,
          control: { token, actions: daemon },
          healthy: () => daemon.status().healthy,
          status: async () => ({ ...(await collectStatus(parts, applier, notifier)), daemon: daemon.status() }),
        });
      } catch (cause) {
        // An Agent nobody can ask about or roll back is not one to leave running.
        throw new AgentError('STATUS_BIND_FAILED', `cannot serve status on ${config.status.listen}: ${errorCode(cause)}: ${errorMessage(cause)}`, { cause });
      }
      logger.info({ url: status.url }, 'status, /healthz and /metrics listening');
    }
    await daemon.start();
    // The predecessor waits, alive and idle, for proof that this Agent works: one successful
    // sync cycle. Only then is it removed; until then it can take the node back.
    const yieldNode = async () => {
      await daemon.stop();
      await notifier.close().catch(() => undefined);
      await status?.close().catch(() => undefined);
      await lock.release();
    };
    if (role.kind === 'take-over') void confirmTakeover(config, parts.audit, logger, role.record, daemon, own, yieldNode);
    if (role.kind === 'complete') void completeTakeover(config, parts.audit, logger, role.record, own);
    if (selfUpdater !== null) {
      // A trigger applied before this start (or before a crash) is followed up now, not at the next snapshot.
      const current = await parts.engine.appliedTarget().catch(() => null);
      const update = current?.snapshot.updates?.agent;
      if (current && update) void selfUpdater.consider(update, current.digest);
    }
    const statusServer = status;
    return {
      daemon,
      statusUrl: statusServer?.url ?? null,
      bridgeAddress,
      async stop() {
        await daemon.stop();
        await notifier.close().catch(() => undefined);
        await statusServer?.close();
        await parts.audit.close();
        await lock.release();
      },
    };
  } catch (error) {
    await notifier.close().catch(() => undefined);
    await status?.close();
    await lock.release();
    throw error;
  }
}

/**
 * Starts the bridge endpoint; any failure is BRIDGE_BIND_FAILED, and the Agent stops rather
 * than apply snapshots no runtime could ever hear about.
 */
async function startBridge(config: AgentConfig, logger: Logger, onLateAck: (ack: BridgeAck) => void) {
  const listen = parseListen(config.bridge.listen);
  try {
    if (listen === null) throw new Error(`bridge.listen ${config.bridge.listen} is not a loopback address or a socket path`);
    const runDir = resolve(config.state_dir, BRIDGE_RUN_DIR);
    for (const dir of new Set([dirname(config.bridge.token_file), ...('socketPath' in listen ? [dirname(listen.socketPath)] : [])])) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // Our own run directory is put back to 0700 whatever an older version left; a directory
      // the operator chose is theirs to fix, and the endpoint refuses it when others can write it.
      if (dir === runDir) await chmod(dir, 0o700);
    }
    return await startBridgeNotifier({ listen, tokenFile: config.bridge.token_file, logger, ackTimeoutMs: config.bridge.ack_timeout_ms, onLateAck });
  } catch (cause) {
    throw new AgentError('BRIDGE_BIND_FAILED', `cannot host the runtime bridge on ${config.bridge.listen}: ${errorCode(cause)}: ${errorMessage(cause)}`, {
      cause,
    });
  }
}

/** acquireLock, waiting while another holder is live, up to `ms`. */
async function acquireLockWithin(dir: string, processes: ProcessPort, ms: number) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await acquireLock(dir, processes);
    } catch (error) {
      if (errorCode(error) !== 'LOCKED' || Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** What enterHandover leaves the start with: the lock to run with, or an Agent that only waits. */
type Entered = { kind: 'run'; lock: HeldLock; role: HandoverRole } | { kind: 'idle'; agent: RunningAgent };

/**
 * Plays this Agent's part in a hand-over in progress (handover.json), if any, before the
 * usual start. The predecessor restarted in the middle resumes guarding its successor and
 * comes back holding the lock only if it reverted it; the successor takes the lock (waiting
 * for the predecessor's release); an Agent whose hand-over was decided against it applies
 * nothing and waits to be removed.
 */
async function enterHandover(config: AgentConfig, logger: Logger, lockPort: ProcessPort, exit: (code: number) => void): Promise<Entered> {
  const dir = config.state_dir;
  const own = await ownContainerId();
  const record = await readHandoverRecord(dir);
  const outcome = record === null ? null : ((await readHandoverOutcome(dir, record.id))?.outcome ?? null);
  let role = handoverRole(record, outcome, own, process.env[HANDOVER_ID]);
  const successors = dockerSuccessors(config.docker.socket_path);
  let retaken: HeldLock | null = null;
  const guardDeps = (self: string) => ({
    successors,
    // Opened only once the lock is retaken: this Agent's own log object, not the running one's.
    audit: new AuditLog(join(dir, 'audit.jsonl')),
    attempts: fileAttemptStore(dir),
    logger,
    stateDir: dir,
    timeoutMs: config.self_update.handover_timeout_ms,
    self,
    retakeLock: async () => {
      retaken = await acquireLockWithin(dir, lockPort, 60_000);
    },
  });
  if (role.kind === 'guard' && own !== null) {
    logger.warn({ handover: role.record.id, digest: role.record.digest }, 'self-update: restarted in the middle of a hand-over; guarding the successor again');
    const result = await guardHandover(guardDeps(own), role.record, { successor: null, resumed: true });
    role = result === 'failed' ? { kind: 'none' } : { kind: 'superseded', record: role.record };
  } else if (role.kind === 'finish-revert' && own !== null) {
    logger.warn({ handover: role.record.id }, 'self-update: restarted while reverting a hand-over; finishing the revert');
    await finishRevert(guardDeps(own), role.record, { successor: null, tookOver: false, reason: 'the hand-over was reverted' });
    role = { kind: 'none' };
  } else if (role.kind === 'superseded' && (await successors.list(role.record.id)).length === 0) {
    // Confirmed, but its successor is gone (removed by hand): nobody else can be the Agent.
    const lock = await acquireLock(dir, lockPort);
    await clearHandover(dir, role.record.id);
    return { kind: 'run', lock, role: { kind: 'none' } };
  }
  if (role.kind === 'superseded' || role.kind === 'yield') return { kind: 'idle', agent: idleAgent(config, logger, role, exit) };
  if (retaken !== null) return { kind: 'run', lock: retaken, role };
  // A successor is started right after its predecessor released the lock; it waits for the
  // lock rather than fail if the release is not yet visible.
  const lock = role.kind === 'take-over' || role.kind === 'complete' ? await acquireLockWithin(dir, lockPort, 60_000) : await acquireLock(dir, lockPort);
  return { kind: 'run', lock, role };
}

/**
 * An Agent that lost its hand-over: it holds no lock, runs no loop and waits for the winner
 * to remove its container. A superseded predecessor whose successor disappears restarts (exit
 * 75, its policy brings it back) and then finds nobody else to be the Agent.
 */
function idleAgent(
  config: AgentConfig,
  logger: Logger,
  role: Extract<HandoverRole, { kind: 'superseded' | 'yield' }>,
  exit: (code: number) => void,
): RunningAgent {
  logger.warn({ handover: role.record.id, part: role.kind }, 'self-update: this hand-over was decided for the other Agent; idle until removed');
  const successors = dockerSuccessors(config.docker.socket_path);
  const timer = setInterval(() => {
    if (role.kind !== 'superseded') return;
    void successors.list(role.record.id).then(
      (left) => {
        if (left.length === 0) exit(75);
      },
      () => undefined,
    );
  }, 2000);
  return {
    daemon: null,
    statusUrl: null,
    bridgeAddress: null,
    async stop() {
      clearInterval(timer);
    },
  };
}

/**
 * Decides the hand-over `confirmed` once the loop has had a successful sync cycle, then
 * completes it. Losing that compare-and-set means the predecessor decided to revert in the
 * same instant: this Agent stops applying, lets go of the lock and waits to be removed.
 */
async function confirmTakeover(
  config: AgentConfig,
  audit: AuditLog,
  logger: Logger,
  record: HandoverRecord,
  daemon: Daemon,
  own: string | null,
  yieldNode: () => Promise<void>,
): Promise<void> {
  // Unref'd: an Agent stopped in-process before its first success must not be kept alive by this wait.
  while (daemon.status().lastSuccessAt === null) await new Promise((r) => setTimeout(r, 250).unref());
  const { won } = await decideHandover(config.state_dir, record.id, 'confirmed', own ?? 'unknown');
  if (!won) {
    logger.warn({ handover: record.id }, 'self-update: the predecessor reverted this hand-over first; stopping');
    await yieldNode();
    return;
  }
  await completeTakeover(config, audit, logger, record, own);
}

/** The successor's last step: audit the confirmation, remove the predecessor's container, take its name, end the hand-over. */
async function completeTakeover(config: AgentConfig, audit: AuditLog, logger: Logger, record: HandoverRecord, own: string | null): Promise<void> {
  const successors = dockerSuccessors(config.docker.socket_path);
  try {
    const entries = await readAuditEntries(join(config.state_dir, 'audit.jsonl'));
    if (!entries.some((e) => e.type === 'agent-confirmed' && e.handover === record.id)) {
      await audit.append('agent-confirmed', { predecessor: record.predecessor, container: own, version: AGENT_VERSION, handover: record.id });
    }
    await successors.remove(record.predecessor);
    const name = process.env[HANDOVER_NAME] || record.predecessor_name;
    if (own !== null && name) await successors.rename(own, name).catch(() => undefined);
    await clearHandover(config.state_dir, record.id);
  } catch (error) {
    // The predecessor stopped applying before it released the lock; leaving its container is untidy, not unsafe.
    logger.warn({ predecessor: record.predecessor, err: errorMessage(error) }, 'self-update: could not remove the predecessor container');
    await audit
      .append('agent-update-failed', { stage: 'cleanup', code: 'PREDECESSOR_NOT_REMOVED', message: errorMessage(error), predecessor: record.predecessor })
      .catch(() => undefined);
  }
}
