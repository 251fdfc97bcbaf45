import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';

/** SPEC §5: the header an origin puts on every answer to a `wait` request. */
export const LONG_POLL_HEADER = 'Resultity-Long-Poll';
/** SPEC §5: the bounds of `wait`, in seconds. */
export const LONG_POLL_MAX_WAIT_S = 60;

/**
 * Reads `wait` from a query: null when absent, a number of seconds from 1 to 60, or 'invalid'
 * for anything else (a second `wait`, a fraction, a sign, a leading zero, out of range), so a
 * client that asks for something else hears so instead of getting a wait it did not ask for.
 */
export function parseWait(query: URLSearchParams): number | null | 'invalid' {
  const values = query.getAll('wait');
  if (values.length === 0) return null;
  const [text] = values;
  if (values.length > 1 || text === undefined || !/^[1-9][0-9]?$/.test(text)) return 'invalid';
  const seconds = Number(text);
  return seconds <= LONG_POLL_MAX_WAIT_S ? seconds : 'invalid';
}

/** A change notice for one directory; returns a function that stops watching. */
export type WatchDirectory = (dir: string, onChange: () => void) => () => void;

/**
 * fs.watch on the directory rather than the file: publish replaces latest.json by rename, and
 * a watch on the old file would see only its removal. Errors (the directory removed, the
 * watch limit reached) just end the watch: the stat fallback still notices changes.
 */
export const watchDirectory: WatchDirectory = (dir, onChange) => {
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, () => onChange());
    watcher.on('error', () => watcher?.close());
  } catch {
    watcher = undefined;
  }
  return () => watcher?.close();
};

/** The current content of latest.json as the origin serves it, or null while there is none. */
export interface LatestFile {
  readonly body: Buffer;
  readonly etag: string;
}

interface Waiter {
  readonly res: ServerResponse;
  readonly etag: string;
  readonly timer: NodeJS.Timeout;
  readonly head: boolean;
}

export interface LatestWatchOptions {
  /** Absolute path of the network's latest.json. */
  readonly file: string;
  readonly read: () => Promise<LatestFile | null>;
  readonly watch: WatchDirectory;
  readonly dir: string;
  /** How often the file is stat'ed while requests are held, in case no watch event comes. */
  readonly statIntervalMs: number;
  /** Called when the last waiter is gone, so the owner can drop this watch. */
  readonly onIdle: () => void;
}

/**
 * The requests held on one network's latest.json. A watch (fs.watch, then a cheap stat every
 * statIntervalMs as a fallback: fs.watch can miss events on network file systems and in some
 * containers) runs only while something is held; each change is read once and answers every
 * waiter whose ETag it no longer matches.
 */
export class LatestWatch {
  private readonly waiters = new Set<Waiter>();
  private stopWatch: (() => void) | undefined;
  private statTimer: NodeJS.Timeout | undefined;
  private lastStat = '';
  private checking = false;
  private checkAgain = false;

  constructor(private readonly options: LatestWatchOptions) {}

  get size(): number {
    return this.waiters.size;
  }

  /** Holds `res` until latest.json no longer has `etag` (200) or `seconds` pass (304). */
  hold(res: ServerResponse, etag: string, seconds: number, head: boolean): void {
    const timer = setTimeout(() => {
      this.remove(waiter);
      res.writeHead(304, { ETag: waiter.etag, 'Cache-Control': 'no-cache' }).end();
    }, seconds * 1000);
    const waiter: Waiter = { res, etag, timer, head };
    this.waiters.add(waiter);
    // A client that gives up frees its place at once.
    res.on('close', () => this.remove(waiter));
    if (this.stopWatch === undefined) this.start();
    // The file may have changed between the read that decided to hold and the watch starting.
    this.check();
  }

  /** Ends the watch and lets held requests go (the server is closing). */
  close(): void {
    for (const waiter of [...this.waiters]) {
      this.remove(waiter);
      waiter.res.destroy();
    }
  }

  private start(): void {
    this.stopWatch = this.options.watch(this.options.dir, () => this.check());
    this.statTimer = setInterval(() => this.statCheck(), this.options.statIntervalMs);
    this.statTimer.unref();
  }

  private stop(): void {
    this.stopWatch?.();
    this.stopWatch = undefined;
    clearInterval(this.statTimer);
    this.statTimer = undefined;
    this.lastStat = '';
  }

  private remove(waiter: Waiter): void {
    if (!this.waiters.delete(waiter)) return;
    clearTimeout(waiter.timer);
    if (this.waiters.size === 0) {
      this.stop();
      this.options.onIdle();
    }
  }

  /** Reads the file only when its identity, size or time moved: a stat is far cheaper. */
  private async statCheck(): Promise<void> {
    const s = await stat(this.options.file, { bigint: true }).catch(() => null);
    const key = s === null ? 'missing' : `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
    if (key === this.lastStat) return;
    this.lastStat = key;
    this.check();
  }

  /** Reads latest.json and answers every waiter it no longer matches; checks coalesce. */
  private check(): void {
    if (this.checking) {
      this.checkAgain = true;
      return;
    }
    this.checking = true;
    void this.options
      .read()
      .catch(() => null)
      .then((latest) => {
        if (latest === null) return;
        for (const waiter of [...this.waiters]) {
          if (waiter.etag === latest.etag) continue;
          this.remove(waiter);
          waiter.res.writeHead(200, {
            ETag: latest.etag,
            'Cache-Control': 'no-cache',
            'Content-Type': 'application/json',
            'Content-Length': latest.body.byteLength,
          });
          waiter.res.end(waiter.head ? undefined : latest.body);
        }
      })
      .finally(() => {
        this.checking = false;
        if (this.checkAgain) {
          this.checkAgain = false;
          this.check();
        }
      });
  }
}
