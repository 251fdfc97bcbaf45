import { chmod, mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { type BridgeAck, ensureTokenFile } from '@resultity/bridge-endpoint';

import { startBridgeNotifier } from './bridge-adapter.js';
import { buildAgent, createLogger } from './agent.js';
import { createApplierPort } from './applier-adapter.js';
import { type AgentConfig, BRIDGE_RUN_DIR, parseListen } from './config.js';
import { Daemon } from './loop.js';
import { type ApplierPort, type Logger, type ProgressInfo, type RuntimeNotifier, noRuntimeNotifier } from './ports.js';
import { longPollFrom } from './schedule.js';
import { collectStatus } from './status.js';
import { type StatusServer, startStatusServer } from './status-server.js';
import { acquireLock } from './lock.js';
import { AGENT_VERSION } from './version.js';
import { AgentError, errorCode, errorMessage } from './errors.js';

/** A running Agent daemon and how to stop it. */
export interface RunningAgent {
  readonly daemon: Daemon;
  readonly statusUrl: string | null;
  readonly bridgeAddress: string | null;
  stop(): Promise<void>;
}

/** The applier port every command uses, with the configuration's policy and profile. */
export function applierFor(config: AgentConfig, logger: Logger): ApplierPort {
  let warned = false;
  return createApplierPort({
    stateDir: config.state_dir,
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
    },
    onEngineUnavailable: (error) => {
      if (warned) return;
      warned = true;
      logger.warn({ socket: config.docker.socket_path, err: errorMessage(error) }, 'Docker engine is not reachable: snapshots with containers cannot be applied until it is');
    },
  });
}

/**
 * Wires the daemon: lock, bridge endpoint, applier, engine, loop, status server. Everything
 * decided lives elsewhere; this only connects the parts.
 */
export async function startAgent(config: AgentConfig, options: { logger?: Logger; onProgress?: (e: ProgressInfo) => void } = {}): Promise<RunningAgent> {
  const lock = await acquireLock(config.state_dir);
  const logger = options.logger ?? createLogger(config);
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
    const parts = await buildAgent(config, { applier, notifier, logger, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
    await parts.audit.append('start', { version: AGENT_VERSION, pid: process.pid });
    lateAck = (ack) => {
      logger.info({ runtime: ack.runtimeId, digest: ack.digest, ok: ack.ok, code: ack.code }, 'runtime answered outside an apply');
      void parts.audit
        .append(ack.ok ? 'runtime-ack' : 'runtime-nack', { digest: ack.digest, late: true, acks: [{ runtime: ack.runtimeId, ok: ack.ok, code: ack.code ?? null }] })
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
    const statusServer = status;
    return {
      daemon,
      statusUrl: statusServer?.url ?? null,
      bridgeAddress,
      async stop() {
        await daemon.stop();
        await notifier.close().catch(() => undefined);
        await statusServer?.close();
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
    throw new AgentError('BRIDGE_BIND_FAILED', `cannot host the runtime bridge on ${config.bridge.listen}: ${errorCode(cause)}: ${errorMessage(cause)}`, { cause });
  }
}

