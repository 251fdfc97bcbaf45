import { createHash } from 'node:crypto';
import { close as closeCallback, fsync as fsyncCallback, open as openCallback, writeSync } from 'node:fs';
import { readFile, truncate } from 'node:fs/promises';
import { promisify } from 'node:util';

import { AgentError } from './errors.js';

const openFd = promisify(openCallback);
const closeFd = promisify(closeCallback);
const fsyncFd = promisify(fsyncCallback);

/** The kinds of entries the Agent writes; the log is append-only and each entry chains to the one before. */
export type AuditType =
  | 'start'
  | 'repair'
  | 'fetch'
  | 'refused'
  | 'verified'
  | 'not-eligible'
  | 'skipped'
  | 'plan'
  | 'apply-started'
  | 'apply-failed'
  | 'apply-cancelled'
  | 'applied'
  | 'collect'
  | 'rollback'
  | 'runtime-ack'
  | 'runtime-nack'
  | 'runtime-none'
  | 'agent-update'
  | 'agent-standby-passed'
  | 'agent-update-failed'
  | 'agent-handover'
  | 'agent-takeover'
  | 'agent-confirmed'
  | 'agent-update-reverted'
  | 'runtime-update'
  | 'budget-exhausted'
  | 'recover'
  | 'root-rotated'
  | 'unpin';

/** One line of audit.jsonl. `prev` is the SHA-256 of the previous line's bytes (64 zeros for the first). */
export interface AuditEntry {
  readonly seq: number;
  readonly time: string;
  readonly type: AuditType;
  readonly prev: string;
  readonly [key: string]: unknown;
}

export const GENESIS = '0'.repeat(64);

function hashLine(line: string): string {
  return createHash('sha256').update(line, 'utf8').digest('hex');
}

/** The last entry of the log: its index (seq) and the SHA-256 of its line; state.json keeps it as an anchor. */
export interface AuditHead {
  readonly index: number;
  readonly hash: string;
}

/** The audit sink the sync loop writes to; a fake may record entries in memory. */
export interface AuditSink {
  append(type: AuditType, data: Record<string, unknown>): Promise<AuditEntry>;
  /** The newest entry this process knows of, or null before the log was opened. */
  head(): AuditHead | null;
}

/**
 * The append-only JSONL audit log. Each append is fsynced before it returns. A line torn by a
 * crash (no trailing newline) is cut off on open and the cut is itself audited, so the chain
 * stays verifiable.
 */
export class AuditLog implements AuditSink {
  private lastHash = GENESIS;
  private nextSeq = 0;
  private opened = false;
  /**
   * Held open in append mode between entries: an apply writes about eight, and opening and
   * closing the file for each cost more CPU than the write and the fsync together. A plain
   * descriptor, not a FileHandle: a log dropped without close() (a one-shot command, a test)
   * must not be closed by the garbage collector with a warning.
   */
  private fd: number | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  private async open(): Promise<void> {
    if (this.opened) return;
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    let torn = 0;
    if (text.length > 0 && !text.endsWith('\n')) {
      const keep = text.lastIndexOf('\n') + 1;
      torn = Buffer.byteLength(text.slice(keep));
      text = text.slice(0, keep);
      await truncate(this.path, Buffer.byteLength(text));
    }
    const lines = text.split('\n').filter((l) => l.length > 0);
    const last = lines.at(-1);
    if (last !== undefined) {
      this.lastHash = hashLine(last);
      const seq = (safeParse(last) as { seq?: unknown } | null)?.seq;
      this.nextSeq = typeof seq === 'number' ? seq + 1 : lines.length;
    }
    this.opened = true;
    if (torn > 0) await this.write('repair', { torn_bytes: torn, reason: 'a partial last line from an interrupted write was cut off' });
  }

  /**
   * Forgets the cached head: the next append reads the log again. For a process that took the
   * state lock back after another Agent held it and appended (a reverted hand-over).
   */
  reload(): void {
    this.queue = this.queue.then(async () => {
      this.opened = false;
      await this.closeHandle();
    });
  }

  /** Closes the file between entries (the next append opens it again); for a process that stops. */
  close(): Promise<void> {
    const run = this.queue.then(() => this.closeHandle());
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async closeHandle(): Promise<void> {
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) await closeFd(fd).catch(() => undefined);
  }

  head(): AuditHead | null {
    return this.opened && this.nextSeq > 0 ? { index: this.nextSeq - 1, hash: this.lastHash } : null;
  }

  append(type: AuditType, data: Record<string, unknown> = {}): Promise<AuditEntry> {
    const run = this.queue.then(async () => {
      await this.open();
      return this.write(type, data);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async write(type: AuditType, data: Record<string, unknown>): Promise<AuditEntry> {
    const entry: AuditEntry = { seq: this.nextSeq, time: this.clock().toISOString(), type, ...data, prev: this.lastHash };
    const line = JSON.stringify(entry);
    this.fd ??= await openFd(this.path, 'a', 0o600);
    try {
      const bytes = Buffer.from(`${line}\n`);
      // O_APPEND: each write lands at the end; a short one (a full disk) continues where it stopped.
      // The write is synchronous (a line into the page cache, cheaper than the promise an
      // asynchronous one costs); the fsync, which waits for the device, is not.
      for (let done = 0; done < bytes.byteLength; ) {
        const written = writeSync(this.fd, bytes, done, bytes.byteLength - done, null);
        if (written === 0) throw new AgentError('AUDIT_BROKEN', `${this.path}: a write made no progress`);
        done += written;
      }
      await fsyncFd(this.fd);
    } catch (error) {
      // A handle that failed once is not trusted again: the next entry opens the file afresh.
      await this.closeHandle();
      throw error;
    }
    this.lastHash = hashLine(line);
    this.nextSeq += 1;
    return entry;
  }
}

/** The result of checking a whole log: ok, or the first entry (1-based line) that breaks the chain. */
export type AuditVerification =
  | { readonly ok: true; readonly entries: number; readonly head: string }
  | { readonly ok: false; readonly entries: number; readonly line: number; readonly seq: number | null; readonly reason: string };

/**
 * Checks every line parses, numbers follow on, and each `prev` is the hash of the line before.
 * With `anchor` (the head state.json recorded), also that the entry it names is still there
 * with the same hash: a chain alone cannot tell a log cut at the end, or rewritten whole with
 * fresh hashes, from an honest one.
 */
export function verifyAuditText(text: string, anchor: AuditHead | null = null): AuditVerification {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let prev = GENESIS;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const entry = safeParse(line) as Partial<AuditEntry> | null;
    const fail = (reason: string) => ({
      ok: false as const,
      entries: lines.length,
      line: i + 1,
      seq: typeof entry?.seq === 'number' ? entry.seq : null,
      reason,
    });
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return fail('is not a JSON object');
    if (entry.seq !== i) return fail(`seq is ${String(entry.seq)}, expected ${i}`);
    if (entry.prev !== prev) return fail(`prev is ${String(entry.prev)}, expected ${prev} (the hash of line ${i})`);
    if (typeof entry.type !== 'string' || typeof entry.time !== 'string') return fail('has no type or time');
    prev = hashLine(line);
    if (anchor !== null && i === anchor.index && prev !== anchor.hash) {
      return fail(`hash is ${prev}, but state.json anchors entry ${anchor.index} at ${anchor.hash}: the log was rewritten`);
    }
  }
  if (anchor !== null && lines.length <= anchor.index) {
    return {
      ok: false,
      entries: lines.length,
      line: lines.length + 1,
      seq: null,
      reason: `the log ends at ${lines.length} entries, but state.json anchors entry ${anchor.index}: entries were cut from the end`,
    };
  }
  return { ok: true, entries: lines.length, head: prev };
}

export async function verifyAuditFile(path: string, anchor: AuditHead | null = null): Promise<AuditVerification> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  return verifyAuditText(text, anchor);
}

/** The entries of the log up to the first one that breaks the chain: what recovery may trust. */
export async function readVerifiedAuditEntries(path: string): Promise<AuditEntry[]> {
  const entries = await readAuditEntries(path);
  const result = verifyAuditText(await readFile(path, 'utf8').catch(() => ''));
  return result.ok ? entries : entries.slice(0, result.line - 1);
}

export async function readAuditEntries(path: string): Promise<AuditEntry[]> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => safeParse(l) as AuditEntry | null)
    .filter((e): e is AuditEntry => e !== null);
}

function safeParse(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}
