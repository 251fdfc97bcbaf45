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
  /** Running and never restarted: what the predecessor asks of a successor (a restart is a crash loop). */
  running(id: string): Promise<boolean>;
  /** Running now, however often it restarted: what the successor asks of its predecessor. */
  alive(id: string): Promise<boolean>;
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
 * container runs nothing). The successor first audits `agent-takeover` (lock held), then
 * `agent-confirmed` after its first successful sync cycle, and only then removes this
 * container. Until that confirmation this Agent stays alive, idle and holding nothing, so a
 * successor that crash-loops after taking over cannot strand the node: one that exits or
 * restarts (under its policy: a crash loop) or does not confirm within `timeoutMs` of taking
 * over is removed, the lock retaken, the failure audited (`agent-update-failed` before the
 * takeover, `agent-update-reverted` after it) and counted against the digest, and the caller
 * resumes (or restarts) this Agent. This Agent is the one to revert because it is the one
 * that is known to work: a successor that cannot start cannot be relied on to revert itself.
 */
export async function handOver(
  deps: HandoverDeps,
  ready: { update: UpdateTarget; ref: string; self: SelfContainer; attempt: number; attempts: Record<string, number> },
): Promise<'handed-over' | 'failed'> {
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  await deps.stopApplying();
  await deps.audit.append('agent-handover', {
    image: ready.update.image,
    image_digest: ready.update.digest,
    version: ready.update.version,
    predecessor: ready.self.id,
  });
  await deps.releaseLock();
  let successor: string | null = null;
  let tookOver = false;
  let reason = 'the successor did not take over in time';
  try {
    successor = await deps.successors.start(ready.self, ready.ref, {
      RESULTITY_AGENT_IMAGE_DIGEST: ready.update.digest,
      [HANDOVER_FROM]: ready.self.id,
      [HANDOVER_NAME]: ready.self.name,
    });
    let deadline = Date.now() + deps.timeoutMs;
    while (Date.now() < deadline) {
      const entries = await readAuditEntries(join(deps.stateDir, 'audit.jsonl')).catch(() => []);
      if (entries.some((e) => e.type === 'agent-confirmed' && e.container === successor)) return 'handed-over';
      if (!tookOver && entries.some((e) => e.type === 'agent-takeover' && e.container === successor)) {
        tookOver = true;
        // The confirmation window starts at the takeover: the first sync may take a poll interval.
        deadline = Date.now() + deps.timeoutMs;
        reason = 'the successor took over but did not confirm a successful sync in time';
      }
      if (!(await deps.successors.running(successor))) {
        reason = tookOver ? 'the successor exited or restarted after it took over' : 'the successor exited before it took over';
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
  const common = {
    version: ready.update.version,
    image: ready.update.image,
    image_digest: ready.update.digest,
    message: reason,
    attempt: ready.attempt,
    successor,
  };
  if (tookOver) await deps.audit.append('agent-update-reverted', { ...common, code: 'SUCCESSOR_NOT_CONFIRMED' });
  else await deps.audit.append('agent-update-failed', { ...common, stage: 'handover', code: 'HANDOVER_FAILED' });
  deps.logger.warn({ digest: ready.update.digest, reason, reverted: tookOver }, 'self-update: hand-over failed; this Agent stays');
  return 'failed';
}
