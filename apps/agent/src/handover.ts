import { join } from 'node:path';

import type { UpdateTarget } from '@resultity/snapshot';

import { type AuditSink, readAuditEntries } from './audit.js';
import { errorMessage } from './errors.js';
import { type HandoverRecord, clearHandover, decideHandover, newHandoverId, readHandoverOutcome, writeHandoverRecord } from './handover-record.js';
import type { Logger } from './ports.js';
import type { AttemptStore, SelfContainer } from './self-update.js';

/** The engine as the hand-over needs it: start the successor, find it, watch it, remove it. */
export interface SuccessorPort {
  /** Starts `ref` like `self` (mounts, network, command, restart policy) with `env` added, labelled with hand-over `id`; returns its id. */
  start(self: SelfContainer, ref: string, env: Readonly<Record<string, string>>, id: string): Promise<string>;
  /** The containers (running or not) started for hand-over `id`: what a restarted predecessor finds its successor by. */
  list(id: string): Promise<string[]>;
  /** Running and never restarted: what the predecessor asks of a successor (a restart is a crash loop). */
  running(id: string): Promise<boolean>;
  /** Removes a container (killing it); one already gone is not an error. */
  remove(id: string): Promise<void>;
  rename(id: string, name: string): Promise<void>;
}

/** What guarding a hand-over needs: watch the successor, and take the node back when it fails. */
export interface GuardDeps {
  readonly successors: SuccessorPort;
  readonly audit: AuditSink;
  readonly attempts: AttemptStore;
  readonly logger: Logger;
  readonly stateDir: string;
  readonly timeoutMs: number;
  /** This Agent's container: who decides a revert. */
  readonly self: string;
  /** Takes the lock again; only called once the successor's container is removed. */
  retakeLock(): Promise<void>;
  sleep?: (ms: number) => Promise<void>;
}

/** What the predecessor gives the hand-over: how to stop being the Agent, and how to guard. */
export interface HandoverDeps extends GuardDeps {
  /** Stops the loop; resolves once no apply is in flight. */
  stopApplying(): Promise<void>;
  releaseLock(): Promise<void>;
}

/** The variables a successor finds: whom it succeeds, under which name, in which hand-over, and its own digest. */
export const HANDOVER_FROM = 'RESULTITY_HANDOVER_FROM';
export const HANDOVER_NAME = 'RESULTITY_HANDOVER_NAME';
export const HANDOVER_ID = 'RESULTITY_HANDOVER_ID';

/**
 * Hands the node to a successor that passed standby. Never two Agents applying: this one
 * stops its loop and audits before it releases the lock, writes nothing while the successor
 * may hold it, and takes it back only after the successor's container is removed (a removed
 * container runs nothing). Before it releases the lock it writes the hand-over record
 * (`handover.json`), so whichever of the two is restarted in the middle knows its part. The
 * successor audits `agent-takeover` (lock held), then, after its first successful sync cycle,
 * decides the hand-over `confirmed` and only then removes this container. Until then this
 * Agent stays alive, idle and holding nothing, and guards (guardHandover).
 */
export async function handOver(
  deps: HandoverDeps,
  ready: { update: UpdateTarget; ref: string; self: SelfContainer; attempt: number; attempts: Record<string, number> },
): Promise<'handed-over' | 'failed'> {
  await deps.stopApplying();
  const record: HandoverRecord = {
    id: newHandoverId(),
    predecessor: ready.self.id,
    predecessor_name: ready.self.name,
    image: ready.update.image,
    digest: ready.update.digest,
    version: ready.update.version,
    attempt: ready.attempt,
    attempts: ready.attempts,
    started_at: new Date().toISOString(),
  };
  await deps.audit.append('agent-handover', {
    image: ready.update.image,
    image_digest: ready.update.digest,
    version: ready.update.version,
    predecessor: ready.self.id,
    handover: record.id,
  });
  await writeHandoverRecord(deps.stateDir, record);
  await deps.releaseLock();
  let successor: string | null = null;
  let startFailure: string | null = null;
  try {
    successor = await deps.successors.start(
      ready.self,
      ready.ref,
      {
        RESULTITY_AGENT_IMAGE_DIGEST: ready.update.digest,
        [HANDOVER_FROM]: ready.self.id,
        [HANDOVER_NAME]: ready.self.name,
        [HANDOVER_ID]: record.id,
      },
      record.id,
    );
  } catch (error) {
    startFailure = `the successor could not be started: ${errorMessage(error)}`;
  }
  return guardHandover(deps, record, { successor, startFailure });
}

/**
 * Watches the successor of hand-over `record` until it is confirmed, or reverts it: one that
 * exits or restarts (under its policy: a crash loop), or does not take over within `timeoutMs`,
 * or does not confirm within `timeoutMs` of taking over, is removed, the lock retaken, the
 * failure audited (`agent-update-failed` before the takeover, `agent-update-reverted` after it)
 * and counted against the digest. This Agent is the one to revert because it is the one known
 * to work: a successor that cannot start cannot be relied on to revert itself.
 *
 * Confirmation and revert are one compare-and-set on the record's outcome (decideHandover):
 * a successor that confirms in the instant this Agent decides to revert either wins (this Agent
 * yields and waits to be removed) or loses (it stops applying and is removed). Called by the
 * predecessor in the hand-over, and again by a predecessor restarted (kill -9) in the middle of
 * one, which finds its successor by the hand-over's label and watches it afresh.
 */
export async function guardHandover(
  deps: GuardDeps,
  record: HandoverRecord,
  known: { successor: string | null; startFailure?: string | null; resumed?: boolean },
): Promise<'handed-over' | 'failed'> {
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let successor = known.successor;
  let tookOver = false;
  let reason = known.startFailure ?? 'the successor did not take over in time';
  let deadline = Date.now() + deps.timeoutMs;
  // A restarted predecessor that finds no successor container gives a create in flight a moment, then reverts.
  const noSuccessorBy = Date.now() + 2000;
  while (known.startFailure == null) {
    const decided = await readHandoverOutcome(deps.stateDir, record.id);
    if (decided?.outcome === 'confirmed') return 'handed-over';
    if (decided?.outcome === 'reverted') {
      reason = 'the hand-over was already reverted';
      break;
    }
    if (successor === null) successor = (await deps.successors.list(record.id))[0] ?? null;
    if (successor === null) {
      if (known.resumed && Date.now() > noSuccessorBy) {
        reason = 'the successor was never started';
        break;
      }
    } else {
      if (!tookOver) {
        const entries = await readAuditEntries(join(deps.stateDir, 'audit.jsonl')).catch(() => []);
        if (entries.some((e) => e.type === 'agent-takeover' && e.container === successor)) {
          tookOver = true;
          // The confirmation window starts at the takeover: the first sync may take a poll interval.
          deadline = Date.now() + deps.timeoutMs;
          reason = 'the successor took over but did not confirm a successful sync in time';
        }
      }
      if (!(await deps.successors.running(successor))) {
        // It may have confirmed and then exited: the outcome, not its state, says.
        if ((await readHandoverOutcome(deps.stateDir, record.id))?.outcome === 'confirmed') return 'handed-over';
        reason = tookOver ? 'the successor exited or restarted after it took over' : 'the successor exited before it took over';
        break;
      }
    }
    if (Date.now() > deadline) break;
    await sleep(250);
  }
  const { won, decided } = await decideHandover(deps.stateDir, record.id, 'reverted', deps.self);
  if (!won && decided.outcome === 'confirmed') {
    deps.logger.info({ handover: record.id, successor }, 'self-update: the successor confirmed first; this Agent yields');
    return 'handed-over';
  }
  return finishRevert(deps, record, { successor, tookOver, reason });
}

/**
 * Carries out a revert this Agent decided: removes every container of the hand-over, then (a
 * removed container runs nothing) takes the lock back, audits and counts the attempt, and
 * ends the hand-over. Safe to run again after a kill in the middle: each step is idempotent,
 * and the audit entry is written once per hand-over.
 */
export async function finishRevert(
  deps: GuardDeps,
  record: HandoverRecord,
  seen: { successor: string | null; tookOver: boolean; reason: string },
): Promise<'failed'> {
  const containers = new Set([...(seen.successor === null ? [] : [seen.successor]), ...(await deps.successors.list(record.id))]);
  for (const id of containers) await deps.successors.remove(id);
  await deps.retakeLock();
  const entries = await readAuditEntries(join(deps.stateDir, 'audit.jsonl')).catch(() => []);
  const successor = seen.successor ?? [...containers][0] ?? null;
  const tookOver = seen.tookOver || entries.some((e) => e.type === 'agent-takeover' && (e.handover === record.id || e.container === successor));
  const audited = entries.some((e) => (e.type === 'agent-update-reverted' || e.type === 'agent-update-failed') && e.handover === record.id);
  if (!audited) {
    await deps.attempts.write({ ...record.attempts, [record.digest]: record.attempt });
    const common = {
      version: record.version,
      image: record.image,
      image_digest: record.digest,
      message: seen.reason,
      attempt: record.attempt,
      successor,
      handover: record.id,
    };
    if (tookOver) await deps.audit.append('agent-update-reverted', { ...common, code: 'SUCCESSOR_NOT_CONFIRMED' });
    else await deps.audit.append('agent-update-failed', { ...common, stage: 'handover', code: 'HANDOVER_FAILED' });
  }
  await clearHandover(deps.stateDir, record.id);
  deps.logger.warn({ digest: record.digest, reason: seen.reason, reverted: tookOver }, 'self-update: hand-over failed; this Agent stays');
  return 'failed';
}
