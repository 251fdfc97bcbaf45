import { join } from 'node:path';

import type { UpdateTarget } from '@resultity/snapshot';

import { type AuditSink, readAuditEntries } from './audit.js';
import { errorMessage } from './errors.js';
import type { Logger } from './ports.js';
import type { AttemptStore, SelfContainer } from './self-update.js';

/** The engine as the hand-over needs it: start the successor, watch it, remove it. */
export interface SuccessorPort {
  /** Starts `ref` like `self` (mounts, network, command, restart policy) with `env` added; returns its id. */
  start(self: SelfContainer, ref: string, env: Readonly<Record<string, string>>): Promise<string>;
  running(id: string): Promise<boolean>;
  /** Removes a container (killing it); one already gone is not an error. */
  remove(id: string): Promise<void>;
  rename(id: string, name: string): Promise<void>;
}

/** What the predecessor gives the hand-over: how to stop and resume being the Agent. */
export interface HandoverDeps {
  readonly successors: SuccessorPort;
  readonly audit: AuditSink;
  readonly attempts: AttemptStore;
  readonly logger: Logger;
  readonly stateDir: string;
  readonly timeoutMs: number;
  /** Stops the loop; resolves once no apply is in flight. */
  stopApplying(): Promise<void>;
  releaseLock(): Promise<void>;
  /** Takes the lock again; only called once the successor's container is removed. */
  retakeLock(): Promise<void>;
  sleep?: (ms: number) => Promise<void>;
}

/** The variables a successor finds: whom it succeeds, under which name, and its own digest. */
export const HANDOVER_FROM = 'RESULTITY_HANDOVER_FROM';
export const HANDOVER_NAME = 'RESULTITY_HANDOVER_NAME';

/**
 * Hands the node to a successor that passed standby. Never two Agents applying: this one
 * stops its loop and audits before it releases the lock, writes nothing while the successor
 * may hold it, and takes it back only after the successor's container is removed (a removed
 * container runs nothing). Success is the successor's own `agent-takeover` entry in the shared
 * audit log within `timeoutMs`; then this Agent only waits to be removed by it. Otherwise the
 * successor is removed, the lock retaken, the failure audited and counted against the digest,
 * and the caller resumes (or restarts) this Agent.
 */
export async function handOver(
  deps: HandoverDeps,
  ready: { update: UpdateTarget; ref: string; self: SelfContainer; attempt: number; attempts: Record<string, number> },
): Promise<'handed-over' | 'failed'> {
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  await deps.stopApplying();
  await deps.audit.append('agent-handover', { image: ready.update.image, image_digest: ready.update.digest, version: ready.update.version, predecessor: ready.self.id });
  await deps.releaseLock();
  let successor: string | null = null;
  let reason = 'the successor did not take over in time';
  try {
    successor = await deps.successors.start(ready.self, ready.ref, {
      RESULTITY_AGENT_IMAGE_DIGEST: ready.update.digest,
      [HANDOVER_FROM]: ready.self.id,
      [HANDOVER_NAME]: ready.self.name,
    });
    const deadline = Date.now() + deps.timeoutMs;
    while (Date.now() < deadline) {
      const entries = await readAuditEntries(join(deps.stateDir, 'audit.jsonl')).catch(() => []);
      if (entries.some((e) => e.type === 'agent-takeover' && e.container === successor)) return 'handed-over';
      if (!(await deps.successors.running(successor))) {
        reason = 'the successor exited before it took over';
        break;
      }
      await sleep(250);
    }
  } catch (error) {
    reason = `the successor could not be started: ${errorMessage(error)}`;
  }
  if (successor !== null) await deps.successors.remove(successor);
  await deps.retakeLock();
  await deps.attempts.write({ ...ready.attempts, [ready.update.digest]: ready.attempt });
  await deps.audit.append('agent-update-failed', {
    version: ready.update.version,
    image: ready.update.image,
    image_digest: ready.update.digest,
    stage: 'handover',
    code: 'HANDOVER_FAILED',
    message: reason,
    attempt: ready.attempt,
    successor,
  });
  deps.logger.warn({ digest: ready.update.digest, reason }, 'self-update: hand-over failed; this Agent stays');
  return 'failed';
}
