import type { AuditSink } from './audit.js';
import { errorCode } from './errors.js';
import type { AgentState, SnapshotRef, StateStore } from './state.js';
import { noteCheck, noteLatest } from './transitions.js';

/**
 * The engine's one way to the state: reads (mending a corrupt state.json through `rebuild`),
 * read-modify-writes one at a time, keeps the time of the last check in memory (a check that
 * finds nothing new writes nothing durable), and anchors the audit log's head in each write.
 */
export class StateKeeper {
  private lock: Promise<unknown> = Promise.resolve();
  private checks: { at: string; reached: boolean; lastSuccess: string | null } | null = null;
  private latest: { ref: SnapshotRef; etag: string | null; at: string } | null = null;
  private rebuilding: Promise<AgentState> | null = null;

  constructor(
    readonly store: StateStore,
    private readonly audit: AuditSink,
    /** Makes a state from what can be verified when state.json does not parse; it writes the result. */
    private readonly rebuild: (cause: unknown) => Promise<AgentState>,
  ) {}

  /** The state with the check times kept in memory since the last write. */
  async read(): Promise<AgentState> {
    return this.withChecks(await this.readDurable());
  }

  /** Read-modify-write, one at a time: a check may run while an apply is in progress. */
  update(change: (state: AgentState) => AgentState | Promise<AgentState>): Promise<AgentState> {
    const run = this.lock.then(async () => {
      const [checks, latest] = [this.checks, this.latest];
      const next = await change(await this.read());
      const head = this.audit.head();
      const written = { ...next, audit_head: head ?? next.audit_head };
      await this.store.write(written);
      // What was noted while this write was under way goes with the next one.
      if (this.checks === checks) this.checks = null;
      if (this.latest === latest) this.latest = null;
      return written;
    });
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** A check happened: remembered in memory and written with the next real change. */
  noteCheck(at: string, reachedOrigin: boolean): void {
    const lastSuccess = reachedOrigin ? at : (this.checks?.lastSuccess ?? null);
    this.checks = { at, reached: reachedOrigin, lastSuccess };
  }

  /**
   * latest.json named `ref` (with this ETag): kept in memory like a check and written with the
   * next real change, which for a new hint follows at once (the snapshot is verified or the
   * failure noted). Lost in a crash, it costs one full fetch of latest.json, nothing more.
   */
  noteLatest(ref: SnapshotRef, etag: string | null, at: string): void {
    this.latest = { ref, etag, at };
  }

  /** Writes the audit head into state.json when entries were appended since the last write. */
  async anchor(): Promise<void> {
    const head = this.audit.head();
    if (head === null) return;
    const durable = await this.readDurable();
    if (durable.audit_head?.index === head.index && durable.audit_head.hash === head.hash) return;
    await this.update((s) => s);
  }

  private withChecks(state: AgentState): AgentState {
    const noted = this.latest === null ? state : noteLatest(state, this.latest.ref, this.latest.etag, this.latest.at);
    if (this.checks === null) return noted;
    let next = noteCheck(noted, this.checks.at, this.checks.reached);
    if (!this.checks.reached && this.checks.lastSuccess !== null) next = { ...next, last_success_check: this.checks.lastSuccess };
    return next;
  }

  private async readDurable(): Promise<AgentState> {
    try {
      return await this.store.read();
    } catch (error) {
      if (errorCode(error) !== 'STATE_CORRUPT') throw error;
      // Every reader that meets the corrupt file waits for the same rebuild.
      this.rebuilding ??= this.rebuild(error).finally(() => {
        this.rebuilding = null;
      });
      return this.rebuilding;
    }
  }
}
