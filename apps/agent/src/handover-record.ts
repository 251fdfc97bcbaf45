import { randomBytes } from 'node:crypto';
import { link, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { fsyncDirectory, writeFileAtomic } from '@resultity/node-kit';

import { AgentError } from './errors.js';
import { readOptional } from './state.js';

/**
 * The hand-over in progress, kept in `<state_dir>/handover.json`: written by the predecessor
 * (holding the lock) before it releases the lock, so an Agent restarted in the middle (the
 * predecessor after a kill -9, the successor after a crash) knows which part it plays.
 */
export interface HandoverRecord {
  /** Names this one hand-over: the successor gets it in RESULTITY_HANDOVER_ID and a container label. */
  readonly id: string;
  /** The predecessor's container id: the Agent that guards the hand-over and may revert it. */
  readonly predecessor: string;
  readonly predecessor_name: string;
  readonly image: string;
  readonly digest: string;
  readonly version: string;
  /** The attempt of this digest this hand-over is, and the attempts before it: what a revert counts. */
  readonly attempt: number;
  readonly attempts: Record<string, number>;
  readonly started_at: string;
}

/** How a hand-over ended: decided once, by whichever of the two Agents got there first. */
export type HandoverOutcome = 'confirmed' | 'reverted';

export interface DecidedOutcome {
  readonly outcome: HandoverOutcome;
  /** The container that decided it. */
  readonly by: string;
  readonly at: string;
}

const RECORD = 'handover.json';

function outcomePath(dir: string, id: string): string {
  return join(dir, `handover-${id}.outcome`);
}

export function newHandoverId(): string {
  return randomBytes(8).toString('hex');
}

/** Written by the predecessor while it still holds the lock. */
export async function writeHandoverRecord(dir: string, record: HandoverRecord): Promise<void> {
  await writeFileAtomic(join(dir, RECORD), `${JSON.stringify(record)}\n`, 0o600);
}

/** The hand-over in progress, or null; a record that does not parse is none (it cannot name anyone). */
export async function readHandoverRecord(dir: string): Promise<HandoverRecord | null> {
  const text = await readOptional(join(dir, RECORD));
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as Partial<HandoverRecord>;
    if (typeof value.id === 'string' && /^[0-9a-f]{16}$/.test(value.id) && typeof value.predecessor === 'string' && typeof value.digest === 'string') {
      return {
        id: value.id,
        predecessor: value.predecessor,
        predecessor_name: String(value.predecessor_name ?? ''),
        image: String(value.image ?? ''),
        digest: value.digest,
        version: String(value.version ?? ''),
        attempt: typeof value.attempt === 'number' ? value.attempt : 1,
        attempts: typeof value.attempts === 'object' && value.attempts !== null ? value.attempts : {},
        started_at: String(value.started_at ?? ''),
      };
    }
  } catch {
    // fall through: not a record
  }
  return null;
}

/** The outcome of hand-over `id`, or null while it is undecided. */
export async function readHandoverOutcome(dir: string, id: string): Promise<DecidedOutcome | null> {
  const text = await readOptional(outcomePath(dir, id));
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as Partial<DecidedOutcome>;
    if (value.outcome === 'confirmed' || value.outcome === 'reverted')
      return { outcome: value.outcome, by: String(value.by ?? ''), at: String(value.at ?? '') };
  } catch {
    // fall through
  }
  // Outcomes are linked into place complete: one that does not parse was damaged, and guessing it could start a second Agent.
  throw new AgentError('STATE_CORRUPT', `${outcomePath(dir, id)} is not a hand-over outcome; an operator must look`);
}

/**
 * Decides hand-over `id` as `outcome`, unless it is already decided: a compare-and-set on
 * `handover-<id>.outcome`. The file is written complete under a temp name, then link(2)ed to
 * its name, which fails when the name exists: of a successor confirming and a predecessor
 * reverting at the same instant, exactly one link succeeds, and both then read the same
 * outcome. Returns the outcome that holds, and whether this call decided it.
 */
export async function decideHandover(dir: string, id: string, outcome: HandoverOutcome, by: string): Promise<{ won: boolean; decided: DecidedOutcome }> {
  const decided: DecidedOutcome = { outcome, by, at: new Date().toISOString() };
  // Not writeFileAtomic's temp name: the lock holder clears those, and the predecessor decides without the lock.
  const temp = join(dir, `.handover-${id}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', 0o600);
  try {
    await file.writeFile(`${JSON.stringify(decided)}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await link(temp, outcomePath(dir, id));
    await fsyncDirectory(dir);
    return { won: true, decided };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const existing = await readHandoverOutcome(dir, id);
    if (existing === null) throw error;
    return { won: false, decided: existing };
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * Ends hand-over `id` once its outcome is carried out (the loser's container removed, the
 * winner holding the lock). Its outcome stays, so a confirmation or revert of it that comes
 * late still loses; the outcomes and temp files of older hand-overs go.
 */
export async function clearHandover(dir: string, id: string): Promise<void> {
  const record = await readHandoverRecord(dir);
  if (record?.id === id) await unlink(join(dir, RECORD)).catch(() => undefined);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const match = /^\.?handover-([0-9a-f]{16})\.(?:outcome|[0-9]+\.[0-9a-f]+\.tmp)$/.exec(name);
    if (match && !(match[1] === id && name.endsWith('.outcome'))) await unlink(join(dir, name)).catch(() => undefined);
  }
  await fsyncDirectory(dir);
}

/** What an Agent starting in a container is, given the record and its outcome (pure). */
export type HandoverRole =
  /** No hand-over concerns this Agent: it starts as usual. */
  | { readonly kind: 'none' }
  /** The predecessor, restarted before the outcome: it resumes watching the successor. */
  | { readonly kind: 'guard'; readonly record: HandoverRecord }
  /** The predecessor, restarted after it decided to revert: it finishes the revert. */
  | { readonly kind: 'finish-revert'; readonly record: HandoverRecord }
  /** The predecessor of a confirmed successor: it stays idle until the successor removes it. */
  | { readonly kind: 'superseded'; readonly record: HandoverRecord }
  /** The successor before the outcome: it takes over and tries to confirm. */
  | { readonly kind: 'take-over'; readonly record: HandoverRecord }
  /** The successor, confirmed: it takes the lock and finishes (removes the predecessor). */
  | { readonly kind: 'complete'; readonly record: HandoverRecord }
  /** The successor of a reverted hand-over: it applies nothing and waits to be removed. */
  | { readonly kind: 'yield'; readonly record: HandoverRecord };

export function handoverRole(
  record: HandoverRecord | null,
  outcome: HandoverOutcome | null,
  ownContainer: string | null,
  /** RESULTITY_HANDOVER_ID of this container: the hand-over it was started by, if any. */
  startedBy: string | undefined,
): HandoverRole {
  if (record === null || ownContainer === null) return { kind: 'none' };
  // The predecessor role comes first: a successor that later hands over itself still carries
  // the variables of the hand-over that started it.
  if (record.predecessor === ownContainer) {
    if (outcome === null) return { kind: 'guard', record };
    return outcome === 'reverted' ? { kind: 'finish-revert', record } : { kind: 'superseded', record };
  }
  if (startedBy === record.id) {
    if (outcome === null) return { kind: 'take-over', record };
    return outcome === 'confirmed' ? { kind: 'complete', record } : { kind: 'yield', record };
  }
  return { kind: 'none' };
}
