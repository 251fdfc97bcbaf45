import { mkdir, open, readFile, readdir, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { fsyncDirectory, writeFileAtomic } from '@resultity/node-kit';
import { z } from 'zod';

import { AgentError } from './errors.js';

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const Ref = z.object({ digest, sequence: z.number().int().min(0) });
/** A snapshot as the Agent refers to it: its digest and sequence. */
export type SnapshotRef = z.infer<typeof Ref>;

const ErrorRecord = z.object({ code: z.string(), message: z.string(), at: z.string(), digest: digest.optional() });
/** The last error the Agent met, as status and heartbeats report it. */
export type ErrorRecord = z.infer<typeof ErrorRecord>;

const Failure = z.object({ sequence: z.number().int().min(0), attempts: z.number().int().min(0), code: z.string(), message: z.string(), failed: z.boolean(), at: z.string() });
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

  constructor(readonly dir: string, private readonly historySize = 10) {
    this.paths = statePaths(dir);
  }

  async read(): Promise<AgentState> {
    const text = await readOptional(this.paths.state);
    if (text === null) return emptyState();
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (cause) {
      throw new AgentError('STATE_CORRUPT', `${this.paths.state} is not JSON: ${(cause as Error).message}`, { cause });
    }
    const parsed = StateSchema.safeParse(value);
    if (!parsed.success) throw new AgentError('STATE_CORRUPT', `${this.paths.state}: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  async write(state: AgentState): Promise<void> {
    await writeFileAtomic(this.paths.state, `${JSON.stringify(state, null, 2)}\n`, 0o600);
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
    await rm(this.paths.journal, { force: true });
    await fsyncDirectory(this.dir);
  }

  /** Keeps a verified envelope; only envelopes that passed verification are ever stored here. */
  async putEnvelope(d: string, bytes: Uint8Array): Promise<void> {
    const path = this.paths.envelope(d);
    if ((await readOptional(path)) !== null) return;
    await writeFileAtomic(path, bytes, 0o600);
  }

  async getEnvelope(d: string): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await readFile(this.paths.envelope(d)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
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
      names = await readdir(this.paths.envelopes);
    } catch {
      names = [];
    }
    for (const name of names) {
      const d = `sha256:${name.replace(/\.json$/, '')}`;
      if (!keptDigests.has(d) && !keep.has(d) && /^[0-9a-f]{64}\.json$/.test(name)) await unlink(join(this.paths.envelopes, name)).catch(() => undefined);
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
    return Promise.all(versions.map(async (v) => new Uint8Array(await readFile(this.paths.root(v)))));
  }

  async putRoot(version: number, bytes: Uint8Array): Promise<void> {
    await writeFileAtomic(this.paths.root(version), bytes, 0o600);
  }

  async clearRoots(): Promise<void> {
    await rm(this.paths.roots, { recursive: true, force: true });
  }
}

/**
 * One Agent process per state directory: the daemon and the one-shot commands that write take
 * this lock. A lock whose process is gone is stale and taken over.
 */
export async function acquireLock(dir: string): Promise<{ release(): Promise<void> }> {
  const path = statePaths(dir).lock;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const file = await open(path, 'wx', 0o600);
      await file.writeFile(`${process.pid}\n`);
      await file.sync();
      await file.close();
      return { release: () => rm(path, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number((await readOptional(path))?.trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new AgentError('LOCKED', `another Agent (pid ${pid}) holds ${path}; stop it first`);
      }
      await rm(path, { force: true });
    }
  }
  throw new AgentError('USAGE', `could not take ${path}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
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
