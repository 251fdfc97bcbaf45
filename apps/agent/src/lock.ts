import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { fsyncDirectory, readRegularFileSync, removeStaleTempFiles } from '@resultity/node-kit';

import { AgentError } from './errors.js';

/**
 * Who holds a lock: enough to tell a live holder from a dead one after a reboot or a pid
 * reuse, plus a nonce that names this one holding (a takeover is keyed by it).
 */
export interface LockHolder {
  readonly boot_id: string;
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot): a reused pid has another one. */
  readonly start_time: string;
  readonly nonce: string;
  /**
   * The pid namespace (`pid:[inode]`) the pid is counted in: a pid from another namespace (a
   * container's) says nothing about this one's processes. Absent in older records.
   */
  readonly pid_ns?: string;
  /** The container the holder ran in, when it did: from another namespace, only the engine can say it is gone. */
  readonly container?: string;
}

/** How the lock learns about processes; /proc by default, a fake in unit tests. */
export interface ProcessPort {
  /** This process as it would record itself (without the nonce). */
  self(): Promise<Omit<LockHolder, 'nonce'>>;
  /** Whether the process that wrote `holder` still runs: same boot, same pid, same start time. */
  alive(holder: LockHolder): Promise<boolean>;
}

/** A held lock; release removes it only while it is still this holding's. */
export interface HeldLock {
  readonly path: string;
  readonly holder: LockHolder;
  release(): Promise<void>;
}

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** The boot id given to a lock in the old format (a bare pid), which recorded none. */
const LEGACY = 'legacy';

async function readBootId(): Promise<string> {
  return (await readFile(BOOT_ID_FILE, 'utf8')).trim();
}

/** Field 22 (starttime) of a /proc/<pid>/stat line. */
export function startTimeFromStat(text: string): string | null {
  // The command name (field 2) is in parentheses and may itself hold spaces or ')': the
  // fields that follow start after the last ')'. That tail begins with field 3.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const value = text.slice(close + 2).split(' ')[22 - 3];
  return value !== undefined && /^[0-9]+$/.test(value) ? value : null;
}

/** The start time of process `pid`, or null when there is no such process. */
export async function processStartTime(pid: number | 'self'): Promise<string | null> {
  try {
    return startTimeFromStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/** The Linux process port: boot id and start time from /proc. */
export const procfs: ProcessPort = {
  async self() {
    const start = await processStartTime('self');
    if (start === null) throw new AgentError('USAGE', 'cannot read /proc/self/stat: the state lock needs Linux /proc');
    return { boot_id: await readBootId(), pid: process.pid, start_time: start };
  },
  async alive(holder) {
    // A lock written by an Agent before boot ids were recorded: only its pid can be checked.
    if (holder.boot_id === LEGACY) return (await processStartTime(holder.pid)) !== null;
    if (holder.boot_id !== (await readBootId())) return false;
    return (await processStartTime(holder.pid)) === holder.start_time;
  },
};

/** Parses a lock file; anything that is not a complete record is a holding nobody can prove alive. */
export function parseHolder(text: string): LockHolder | null {
  const legacy = /^([1-9][0-9]{0,9})\n?$/.exec(text);
  if (legacy) return { boot_id: LEGACY, pid: Number(legacy[1]), start_time: '', nonce: createHash('sha256').update(text).digest('hex').slice(0, 16) };
  try {
    const value = JSON.parse(text) as Partial<LockHolder>;
    if (
      typeof value.boot_id === 'string' &&
      Number.isInteger(value.pid) &&
      typeof value.start_time === 'string' &&
      typeof value.nonce === 'string' &&
      /^[0-9a-f]{8,64}$/.test(value.nonce) &&
      (value.pid_ns === undefined || typeof value.pid_ns === 'string') &&
      (value.container === undefined || typeof value.container === 'string')
    ) {
      return value as LockHolder;
    }
  } catch {
    // fall through: not a record
  }
  return null;
}

/** What a lock file is found to be: absent, held by a live process, or left by a dead one. */
type Found = { kind: 'absent' } | { kind: 'live'; holder: LockHolder } | { kind: 'stale'; key: string };

/** Takeovers of takeovers only happen when contenders die mid-takeover; this bounds the name length. */
const MAX_DEPTH = 6;
/** A holder record is one short line; anything near this is not one. */
const LOCK_RECORD_BYTES = 64 * 1024;
/** How often a contender looks again while another one is mid-takeover. */
const RETRIES = 200;

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Takes `<dir>/agent.lock` for this process, or throws LOCKED naming the live holder.
 *
 * A free lock is created with link(2), which fails when the name exists, so two contenders
 * never both create it. A lock left by a dead holder (other boot, or no process with that pid
 * and start time) is replaced with rename(2), which is atomic, but only by the contender that
 * first created the marker `<lock>.takeover-<nonce of the dead holding>` (again with link):
 * only one contender can ever win the right to replace one given holding, and it checks the
 * lock still is that holding before replacing it. A contender that dies holding a marker
 * leaves a marker that is itself stale, and is taken over by the same rule, one level down.
 */
export async function acquireLock(dir: string, processes: ProcessPort = procfs): Promise<HeldLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'agent.lock');
  const holder: LockHolder = { ...(await processes.self()), nonce: randomBytes(8).toString('hex') };
  const record = `${JSON.stringify(holder)}\n`;
  for (let attempt = 0; attempt < RETRIES; attempt++) {
    const outcome = await claim(path, record, processes, 0);
    if (outcome.kind === 'won') {
      await fsyncDirectory(dir);
      // The holder is the state directory's only writer: what a killed writer left half-written
      // is its to clear (the chaos campaign found these temp files outliving every restart).
      await removeStaleTempFiles(dir);
      return {
        path,
        holder,
        release: async () => {
          // Only our own holding is removed: a lock that was (wrongly) taken from us stays its new holder's.
          const current = parseHolder((await readOptional(path)) ?? '');
          if (current?.nonce === holder.nonce) await unlink(path).catch(() => undefined);
        },
      };
    }
    if (outcome.kind === 'live') {
      const where = outcome.holder.container ? ` in container ${outcome.holder.container.slice(0, 12)}` : '';
      throw new AgentError('LOCKED', `another Agent (pid ${outcome.holder.pid}${where}) holds ${path}; stop it first`);
    }
    // Someone is taking over a stale lock right now: look again once it is done.
    await sleep(5 + Math.floor(Math.random() * 20));
  }
  throw new AgentError('LOCKED', `${path} stayed contended; another Agent is starting`);
}

type Claim = { kind: 'won' } | { kind: 'live'; holder: LockHolder } | { kind: 'busy' };

/** One attempt to make `slot` hold `record`; never leaves two contenders both winning one slot. */
async function claim(slot: string, record: string, processes: ProcessPort, depth: number): Promise<Claim> {
  const temp = await writeTemp(slot, record);
  try {
    try {
      await link(temp, slot);
      return { kind: 'won' };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const found = await inspect(slot, processes);
    if (found.kind === 'absent') return { kind: 'busy' };
    if (found.kind === 'live') return { kind: 'live', holder: found.holder };
    if (depth >= MAX_DEPTH) return { kind: 'busy' };
    const marker = `${slot}.takeover-${found.key}`;
    const right = await claim(marker, record, processes, depth + 1);
    if (right.kind !== 'won') return { kind: 'busy' };
    try {
      // Only the marker's holder may replace this holding, so nothing can change the slot
      // between this check and the rename but that holding itself, which is dead.
      const again = await inspect(slot, processes);
      if (again.kind !== 'stale' || again.key !== found.key) return { kind: 'busy' };
      await rename(temp, slot);
      return { kind: 'won' };
    } finally {
      await unlink(marker).catch(() => undefined);
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

async function inspect(slot: string, processes: ProcessPort): Promise<Found> {
  const text = await readOptional(slot);
  if (text === null) return { kind: 'absent' };
  const holder = parseHolder(text);
  // Files are only ever linked or renamed into place complete, so an unreadable record is not
  // a write in progress: it is a foreign or damaged file, keyed by its content.
  if (holder === null) return { kind: 'stale', key: createHash('sha256').update(text).digest('hex').slice(0, 16) };
  if (await processes.alive(holder)) return { kind: 'live', holder };
  return { kind: 'stale', key: holder.nonce };
}

async function writeTemp(slot: string, record: string): Promise<string> {
  const temp = join(dirname(slot), `.${basename(slot)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', 0o600);
  try {
    await file.writeFile(record);
    await file.sync();
  } finally {
    await file.close();
  }
  return temp;
}

/** A lock slot's record as text, or null when absent: bounded, and never waiting on a FIFO under its name. */
async function readOptional(path: string): Promise<string | null> {
  let bytes: Uint8Array | null;
  try {
    bytes = readRegularFileSync(path, LOCK_RECORD_BYTES);
  } catch (error) {
    throw new AgentError('STATE_CORRUPT', error instanceof Error ? error.message : String(error), { cause: error });
  }
  return bytes === null ? null : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}
