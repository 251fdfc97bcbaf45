import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { fsyncDirectory, readRegularFileSync, writeFileAtomic } from '@resultity/node-kit';
import { z } from 'zod';

import { AgentError } from './errors.js';

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const Ref = z.object({ digest, sequence: z.number().int().min(0) });
/** A snapshot as the Agent refers to it: its digest and sequence. */
export type SnapshotRef = z.infer<typeof Ref>;

const ErrorRecord = z.object({ code: z.string(), message: z.string(), at: z.string(), digest: digest.optional() });
/** The last error the Agent met, as status and heartbeats report it. */
export type ErrorRecord = z.infer<typeof ErrorRecord>;

const Failure = z.object({
  sequence: z.number().int().min(0),
  attempts: z.number().int().min(0),
  code: z.string(),
  message: z.string(),
  failed: z.boolean(),
  at: z.string(),
});
/** A digest's failed attempts; `failed` once the retry budget is spent. */
export type FailureRecord = z.infer<typeof Failure>;

const UpdateRecord = z.object({ version: z.string(), image: z.string(), digest: z.string(), seen_in: digest, at: z.string() });

const StateSchema = z.object({
  version: z.literal(1),
  applied: Ref.nullable(),
  /** The newest sequence ever applied: the floor for rollback protection, even while pinned lower. */
  high_water: Ref.nullable(),
  /** Set by an operator's rollback: stay here until the network publishes a sequence above `until_above`. */
  pinned: z.object({ digest, sequence: z.number().int(), until_above: z.number().int(), at: z.string() }).nullable(),
  etag: z.string().nullable(),
  /** The hint latest.json gave with that ETag, so a 304 still says what the origin points at. */
  latest: Ref.nullable(),
  /** When latest.json last answered 200; the ETag is not sent once this is old (weak ETags can hide a change). */
  latest_at: z.string().nullable().default(null),
  failures: z.record(z.string(), Failure),
  not_eligible: z.array(digest),
  history: z.array(Ref.extend({ verified_at: z.string(), applied_at: z.string().nullable() })),
  last_check: z.string().nullable(),
  last_success_check: z.string().nullable(),
  last_error: ErrorRecord.nullable(),
  pending_agent_update: UpdateRecord.nullable(),
  runtime: z.object({ digest: digest.nullable(), outcome: z.string(), at: z.string() }).nullable(),
  /** The audit log's last entry when this file was written: `audit verify` finds entries cut from the end or a rewritten log. */
  audit_head: z
    .object({ index: z.number().int().min(0), hash: z.string().regex(/^[0-9a-f]{64}$/) })
    .nullable()
    .default(null),
});
/** Everything the Agent remembers between runs, in one atomically replaced file. */
export type AgentState = z.infer<typeof StateSchema>;

const JournalSchema = z.object({
  from: Ref.nullable(),
  to: Ref,
  reason: z.enum(['sync', 'rollback', 'recover']),
  started_at: z.string(),
  /** How many restarts have tried to finish this apply: bounded by the retry budget, so a crash loop ends. */
  recoveries: z.number().int().min(0).default(0),
});
/** The apply in progress: written before the first mutating step, removed after the digest is recorded. */
export type Journal = z.infer<typeof JournalSchema>;

export function emptyState(): AgentState {
  return {
    version: 1,
    applied: null,
    high_water: null,
    pinned: null,
    etag: null,
    latest: null,
    latest_at: null,
    failures: {},
    not_eligible: [],
    history: [],
    last_check: null,
    last_success_check: null,
    last_error: null,
    pending_agent_update: null,
    runtime: null,
    audit_head: null,
  };
}

/** Where each file lives in the state directory (documented in the README). */
export function statePaths(dir: string) {
  return {
    dir,
    state: join(dir, 'state.json'),
    journal: join(dir, 'journal.json'),
    lastKnownGood: join(dir, 'last-known-good.json'),
    envelopes: join(dir, 'envelopes'),
    envelope: (d: string) => join(dir, 'envelopes', `${d.replace(/^sha256:/, '')}.json`),
    roots: join(dir, 'roots'),
    root: (version: number) => join(dir, 'roots', `${version}.json`),
    audit: join(dir, 'audit.jsonl'),
    lock: join(dir, 'agent.lock'),
  };
}

/** The state directory: every write goes through writeFileAtomic, so a kill -9 leaves the old file or the new. */
export class StateStore {
  readonly paths: ReturnType<typeof statePaths>;
  /** The state as last read or written, and the file identity it was read from. */
  private cached: { state: AgentState; identity: string } | null = null;

  /**
   * `maxFileBytes` bounds every read of the state directory (state.json, envelopes, roots):
   * what is there was written by the Agent, but a damaged or tampered file must not hang or
   * exhaust it.
   */
  constructor(
    readonly dir: string,
    private readonly historySize = 10,
    private readonly maxFileBytes = 64 * 1024 * 1024,
  ) {
    this.paths = statePaths(dir);
  }

  /**
   * The state; read from disk only when the file changed since it was last read or written
   * (a stat, not a parse, on every poll). Throws STATE_CORRUPT for a file that does not parse.
   */
  async read(): Promise<AgentState> {
    const identity = await fileIdentity(this.paths.state);
    if (this.cached !== null && this.cached.identity === identity) return this.cached.state;
    if (identity === null) {
      this.cached = null;
      return emptyState();
    }
    const bytes = await readRegularFile(this.paths.state, this.maxFileBytes, 'STATE_CORRUPT');
    if (bytes === null) return emptyState();
    let value: unknown;
    try {
      value = JSON.parse(Buffer.from(bytes).toString('utf8'));
    } catch (cause) {
      throw new AgentError('STATE_CORRUPT', `${this.paths.state} is not JSON: ${(cause as Error).message}`, { cause });
    }
    const parsed = StateSchema.safeParse(value);
    if (!parsed.success)
      throw new AgentError('STATE_CORRUPT', `${this.paths.state}: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
    this.cached = { state: parsed.data, identity };
    return parsed.data;
  }

  async write(state: AgentState): Promise<void> {
    await writeFileAtomic(this.paths.state, `${JSON.stringify(state, null, 2)}\n`, 0o600);
    const identity = await fileIdentity(this.paths.state);
    this.cached = identity === null ? null : { state, identity };
  }

  /** Moves a state.json that does not parse aside (kept for a person to look at) and returns where. */
  async quarantine(at: Date): Promise<string> {
    const aside = `${this.paths.state}.corrupt-${at.toISOString().replace(/[:.]/g, '-')}`;
    await rename(this.paths.state, aside).catch(() => undefined);
    await fsyncDirectory(this.dir);
    this.cached = null;
    return aside;
  }

  async readJournal(): Promise<Journal | null> {
    const text = await readOptional(this.paths.journal);
    if (text === null) return null;
    const parsed = JournalSchema.safeParse(safeJson(text));
    // A journal that does not parse was never completely written (writes are atomic), so there
    // is no apply it could describe: treat it as absent.
    return parsed.success ? parsed.data : null;
  }

  async writeJournal(journal: z.input<typeof JournalSchema>): Promise<void> {
    await writeFileAtomic(this.paths.journal, `${JSON.stringify(journal)}\n`, 0o600);
  }

  async clearJournal(): Promise<void> {
    // Synchronous like the reads (a page-cache operation); the directory's fsync is not.
    try {
      unlinkSync(this.paths.journal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    await fsyncDirectory(this.dir);
  }

  /** Keeps a verified envelope; only envelopes that passed verification are ever stored here. */
  async putEnvelope(d: string, bytes: Uint8Array): Promise<void> {
    const path = this.paths.envelope(d);
    let existing: ReturnType<typeof statSync> | null;
    try {
      existing = statSync(path, { throwIfNoEntry: false }) ?? null;
    } catch {
      existing = null;
    }
    if (existing?.isFile()) return;
    // Anything else under an envelope's name (a FIFO, a directory) was not written by the Agent.
    if (existing) await rm(path, { recursive: true, force: true });
    await writeFileAtomic(path, bytes, 0o600);
  }

  /** A stored envelope, or null when there is none; anything but a regular file is refused (NOT_IN_HISTORY). */
  async getEnvelope(d: string): Promise<Uint8Array | null> {
    return readRegularFile(this.paths.envelope(d), this.maxFileBytes, 'NOT_IN_HISTORY');
  }

  async getLastKnownGood(): Promise<Uint8Array | null> {
    return readRegularFile(this.paths.lastKnownGood, this.maxFileBytes, 'STATE_CORRUPT');
  }

  async putLastKnownGood(bytes: Uint8Array): Promise<void> {
    await writeFileAtomic(this.paths.lastKnownGood, bytes, 0o600);
  }

  /** Removes envelopes beyond the newest `historySize`, never one the state still points at. */
  async prune(state: AgentState): Promise<AgentState> {
    const keep = new Set<string>();
    for (const ref of [state.applied, state.high_water, state.pinned, state.latest]) if (ref) keep.add(ref.digest);
    const journal = await this.readJournal();
    if (journal) {
      keep.add(journal.to.digest);
      if (journal.from) keep.add(journal.from.digest);
    }
    const sorted = [...state.history].sort((a, b) => b.sequence - a.sequence);
    const kept = sorted.filter((entry, index) => index < this.historySize || keep.has(entry.digest));
    const keptDigests = new Set(kept.map((e) => e.digest));
    let names: string[] = [];
    try {
      names = readdirSync(this.paths.envelopes);
    } catch {
      names = [];
    }
    for (const name of names) {
      const d = `sha256:${name.replace(/\.json$/, '')}`;
      if (!keptDigests.has(d) && !keep.has(d) && /^[0-9a-f]{64}\.json$/.test(name)) {
        try {
          unlinkSync(join(this.paths.envelopes, name));
        } catch {
          // Gone already, or not ours to remove: pruning is tidying, never a reason to fail.
        }
      }
    }
    return { ...state, history: kept.sort((a, b) => a.sequence - b.sequence) };
  }

  /** Root envelopes learned from the origin by rotation, in version order. */
  async cachedRoots(): Promise<Uint8Array[]> {
    let names: string[];
    try {
      names = await readdir(this.paths.roots);
    } catch {
      return [];
    }
    const versions = names
      .map((n) => /^([1-9][0-9]*)\.json$/.exec(n)?.[1])
      .filter((v): v is string => v !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    const roots = await Promise.all(versions.map((v) => readRegularFile(this.paths.root(v), this.maxFileBytes, 'STATE_CORRUPT')));
    return roots.filter((bytes): bytes is Uint8Array => bytes !== null);
  }

  async putRoot(version: number, bytes: Uint8Array): Promise<void> {
    await writeFileAtomic(this.paths.root(version), bytes, 0o600);
  }

  async clearRoots(): Promise<void> {
    await rm(this.paths.roots, { recursive: true, force: true });
  }
}

/**
 * What changes when a file is replaced or rewritten: inode, size, modification time. A
 * synchronous stat: it is asked several times per apply, and the asynchronous call costs ten
 * times the CPU of the stat itself (a promise and two thread hand-offs for a page-cache lookup).
 */
async function fileIdentity(path: string): Promise<string | null> {
  try {
    const s = statSync(path, { bigint: true });
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * Reads a file of the state directory, at most `maxBytes`, never blocking on what sits under
 * its name (node-kit's `readRegularFileSync`); what cannot be read is `code`. Null when the
 * file does not exist.
 */
export async function readRegularFile(path: string, maxBytes: number, code: 'STATE_CORRUPT' | 'NOT_IN_HISTORY'): Promise<Uint8Array | null> {
  try {
    return readRegularFileSync(path, maxBytes);
  } catch (error) {
    throw new AgentError(code, error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/** A small file of the state directory (journal, lock) as text, or null when absent; never blocks on a FIFO. */
export async function readOptional(path: string): Promise<string | null> {
  const bytes = await readRegularFile(path, 1024 * 1024, 'STATE_CORRUPT');
  return bytes === null ? null : Buffer.from(bytes).toString('utf8');
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
