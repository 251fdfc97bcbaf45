import { type Model, SnapshotError, chunkCount, chunkListByteLength, verifyChunkList } from '@resultity/snapshot';

import { ApplyError, type MirrorFailure, messageOf } from './errors.js';
import { type ChunkHasher, type PrefixHasher, hashChunks, startChunkHasher, startPrefixHasher } from './file-hash.js';
import { HttpStatusError } from './http.js';
import { allMirrorsFailed, hostOf, isNoSpace, mirrorFailure } from './mirror-failures.js';
import type { ChunkPorts, ChunkedPart, Clock, Downloader, ModelStore } from './ports.js';

/** How one mirror is doing in a chunked download: what progress events and reports carry. */
export interface MirrorProgress {
  /** The position of the URL in the model's `urls`. */
  index: number;
  host: string;
  /** Verified bytes this mirror delivered. */
  bytes: number;
  /** Requests in flight on it now. */
  connections: number;
  /** Set once the mirror is given no more work, with why (for the audit log and metrics). */
  failure: MirrorFailure | null;
}

/** What a download reports besides its byte counts. */
export interface DownloadDetail {
  /** Average rate since this download started, bytes per second. */
  bytesPerSecond: number;
  /** Per mirror, for a chunked download; absent for a single stream. */
  mirrors?: MirrorProgress[];
}

/** Options of one chunked download (the stream path's, plus how wide to go). */
export interface ChunkedFetchOptions {
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number, detail?: DownloadDetail) => void;
  /** Consecutive failures of a mirror (cut connections, 5xx) before it gets no more work, default 5. */
  maxAttemptsPerUrl?: number;
  /** First pause before a failing mirror is asked again; doubles each time, default 200 ms. */
  retryDelayMs?: number;
}

/** What a finished chunked download did, for the audit log: every mirror, including those dropped. */
export interface ChunkedReport {
  /** Bytes received over the network in this run (a refetched chunk counts twice). */
  bytesFetched: number;
  /** Chunks found verified in the journal and not fetched again. */
  chunksResumed: number;
  mirrors: MirrorProgress[];
}

export const DEFAULT_CONNECTIONS = 8;
/**
 * The most one request asks for. Eight connections on eight 64 MiB chunks would each finish
 * their chunk at about the same time, so the verified prefix (all the whole-file hash may read)
 * would lag the download by up to 512 MiB, hashed after the last byte arrived; on 8 MiB pieces
 * of the same chunks they move through the file together and the lag is one chunk. Requests
 * are one connection each (`Connection: close`), so much smaller pieces would cost handshakes.
 */
export const DEFAULT_PIECE_BYTES = 8 << 20;
/** Bytes gathered from a streamed response before one positional write; small, since 8 connections stream at once. */
const WRITE_BATCH = 1 << 20;
/** Writes in flight per connection: bounds memory at connections × WRITE_BATCH × this. */
const MAX_IN_FLIGHT = 2;
const PROGRESS_EVERY = 1 << 20;
/**
 * Written bytes after which the staged file is flushed in the background. The kernel starts
 * writing back on its own only past a share of memory (10 % by default), so without this the
 * whole download would be flushed when the last chunks complete, after the last byte arrived.
 */
const FLUSH_EVERY = 64 << 20;
/**
 * A chunk in flight on a mirror is taken back and given to a faster idle one when it would
 * finish this many times later than the other could fetch it whole (and at least a second
 * later): the tail of a download is not left to the slowest mirror.
 */
const STEAL_FACTOR = 3;
const STEAL_MIN_MS = 1000;

interface Mirror {
  index: number;
  url: string;
  host: string;
  active: number;
  /** Verified bytes delivered. */
  bytes: number;
  /** Per-connection rate in bytes/ms (moving average over finished chunks), null until one finished. */
  rate: number | null;
  strikes: number;
  notBefore: number;
  /**
   * Chunks it served whose digest is being computed: until their verdicts it gets no new work,
   * so a mirror that served a wrong chunk is asked for nothing more once that chunk is judged.
   */
  checking: number;
  failure: MirrorFailure | null;
}

/** A written range of a chunk: up to where, and from which mirror. */
interface Settled {
  to: number;
  mirror: Mirror;
}

/**
 * A chunk not yet verified. It is fetched as pieces, all from one mirror (so a wrong chunk
 * names the mirror that served it), several at once; its hash runs in a worker, in file order,
 * over the bytes written without a gap from its start (read back from the staged file).
 */
interface ChunkState {
  index: number;
  start: number;
  end: number;
  /** The mirror its pieces are asked from; null until a connection takes it. */
  mirror: Mirror | null;
  /** Every mirror whose bytes it holds: with more than one (a piece was taken back), a mismatch blames none. */
  sources: Set<Mirror>;
  /** After a mismatch no single mirror could be blamed for: fetched again whole, from one mirror. */
  pinned: boolean;
  /** Ranges not asked for yet, in file order. */
  todo: { from: number; to: number }[];
  /** Written ranges, by where they start. */
  settled: Map<number, Settled>;
  /** Pieces in flight. */
  flights: number;
  /** Its job in the chunk hasher: a new one each time the chunk starts over. */
  hashJob: number;
  /** The file offset up to which its bytes are written without a gap and handed to the hasher. */
  hashedTo: number;
  /** Complete, its digest asked for and not back yet: settles once it is checked. */
  checking: Promise<void> | null;
}

interface Flight {
  chunk: ChunkState;
  from: number;
  to: number;
  mirror: Mirror;
  startedAt: number;
  received: number;
  abort: AbortController;
  /** Taken back for a faster mirror: its failure is not the mirror's fault. */
  stolen: boolean;
  /** Its end was moved back for an idle connection: reaching it is success, whatever the socket does next. */
  split: boolean;
}

/** A split piece's connection is stopped with this once it has delivered up to its new end. */
class SplitReached extends Error {}

/** A flight with less than twice this left is not split. */
const MIN_SPLIT = 1 << 20;

/** A failure that ends the whole download, whichever lane met it (an Error, so it passes through a downloader unchanged). */
class Fatal extends Error {
  constructor(readonly error: unknown) {
    super(messageOf(error));
  }
}

function chunkLabel(index: number): string {
  return `chunk ${index}`;
}

/**
 * Fetches the chunk list from the origin and verifies it against the signed `chunks.sha256`
 * (digest, length, entries). Bytes that are not the list asked for are the origin's fault
 * (CHUNK_LIST_UNAVAILABLE, retryable); a list whose digest matches but whose content is wrong is
 * what the snapshot names (CHUNK_LIST_INVALID, not retryable).
 */
export async function loadChunkList(
  model: Model & { chunks: NonNullable<Model['chunks']> },
  ports: Pick<ChunkPorts, 'lists' | 'staging'>,
  signal?: AbortSignal,
): Promise<string[]> {
  const label = `${model.name}@${model.version}`;
  const hex = model.chunks.sha256;
  const maxBytes = chunkListByteLength(chunkCount(model.size, model.chunks.size));
  // A list kept by an earlier attempt is used only if it still verifies against the signed digest;
  // anything else under its name (torn, of another snapshot) is fetched again.
  const kept = await ports.staging.keptChunkList(model.sha256, maxBytes);
  if (kept !== null) {
    try {
      return verifyChunkList(kept, model);
    } catch {
      // Not the signed list: the origin's copy decides below.
    }
  }
  let bytes: Uint8Array;
  try {
    bytes = await ports.lists.fetch(hex, maxBytes, signal);
  } catch (cause) {
    if (signal?.aborted) throw new ApplyError('ABORTED', `download of ${label} was cancelled`, { cause });
    const code = cause instanceof ApplyError ? cause.code : 'MIRROR_UNREACHABLE';
    throw new ApplyError('CHUNK_LIST_UNAVAILABLE', `model ${label}: its chunk list could not be fetched (${code})`, {
      cause,
      mirrors: [{ index: -1, code, detail: `chunk list ${hex}: ${messageOf(cause)}` }],
    });
  }
  let list: string[];
  try {
    list = verifyChunkList(bytes, model);
  } catch (cause) {
    if (cause instanceof SnapshotError && cause.code === 'DIGEST_MISMATCH') {
      throw new ApplyError('CHUNK_LIST_UNAVAILABLE', `model ${label}: the origin served another chunk list than ${hex}`, { cause });
    }
    throw new ApplyError('CHUNK_LIST_INVALID', `model ${label}: its chunk list is refused: ${messageOf(cause)}`, { cause });
  }
  // Best effort: without it, only a restart while the origin is down loses the resume.
  await ports.staging.keepChunkList(model.sha256, bytes).catch(() => undefined);
  return list;
}

/**
 * Downloads a model that has a chunk list (SPEC §3 `chunks`): ranged requests in parallel,
 * spread over every mirror, each chunk written in place into a preallocated staged file (and
 * hashed in a worker from there), counted only once its digest matches the list, and recorded in a
 * journal once flushed (so a restart, even after kill -9, fetches it never again). A mirror that
 * serves a wrong chunk, fails, stalls or is slow gets less or no work, and its chunks come from
 * the others; the whole file's sha256 is checked (from a hash kept in step with the verified
 * prefix) before the staged file is renamed into the store.
 */
export async function fetchChunked(
  model: Model & { chunks: NonNullable<Model['chunks']> },
  ports: { models: ModelStore; downloader: Downloader; clock: Clock; chunks: ChunkPorts },
  options: ChunkedFetchOptions = {},
): Promise<ChunkedReport> {
  const { downloader, clock } = ports;
  const staging = ports.chunks.staging;
  const label = `${model.name}@${model.version}`;
  const size = model.size;
  const chunkSize = model.chunks.size;
  const count = chunkCount(size, chunkSize);
  const list = await loadChunkList(model, ports.chunks, options.signal);
  const maxStrikes = options.maxAttemptsPerUrl ?? 5;
  const baseDelay = options.retryDelayMs ?? 200;
  const connections = Math.max(1, ports.chunks.connections ?? DEFAULT_CONNECTIONS);
  const lengthOf = (i: number) => Math.min(size, (i + 1) * chunkSize) - i * chunkSize;
  const pieceBytes = Math.max(1, Math.min(chunkSize, ports.chunks.pieceBytes ?? DEFAULT_PIECE_BYTES));
  /** Numbers the chunk hasher's jobs: a chunk that starts over gets a new one, so a late digest of its old bytes is ignored. */
  let hashJobs = 0;
  /** What a chunk starts (and starts over) with: every piece to fetch, nothing written or hashed. */
  const freshPieces = (c: { start: number; end: number }) => {
    const todo: { from: number; to: number }[] = [];
    for (let from = c.start; from < c.end; from += pieceBytes) todo.push({ from, to: Math.min(c.end, from + pieceBytes) });
    return {
      mirror: null,
      sources: new Set<Mirror>(),
      todo,
      settled: new Map<number, Settled>(),
      hashJob: hashJobs++,
      hashedTo: c.start,
      checking: null,
    };
  };
  const newChunkState = (index: number): ChunkState => {
    const start = index * chunkSize;
    const end = start + lengthOf(index);
    return { index, start, end, pinned: false, flights: 0, ...freshPieces({ start, end }) };
  };

  const mirrors: Mirror[] = model.urls.map((url, index) => ({
    index,
    url,
    host: hostOf(url),
    active: 0,
    bytes: 0,
    rate: null,
    strikes: 0,
    notBefore: 0,
    checking: 0,
    failure: null,
  }));
  const startedAt = clock.now();
  let bytesFetched = 0;

  const part = await staging.openChunked(model.sha256, { size, chunkSize, listSha256: model.chunks.sha256 });
  const chunksResumed = part.done.size;
  let hasher: PrefixHasher | null = null;
  try {
    const verified = new Set(part.done);
    // Chunks the journal holds were checked when they arrived; the whole-file hash at the end
    // checks them again, and a mismatch there re-reads every chunk (see below).
    // How far the file is verified without a gap: what the whole-file hash may read.
    let prefix = 0;
    const advancePrefix = () => {
      const before = prefix;
      while (prefix < count && verified.has(prefix)) prefix++;
      if (prefix !== before) hasher?.advance(Math.min(size, prefix * chunkSize));
    };
    for (let round = 0; ; round++) {
      hasher = startPrefixHasher(part.path);
      prefix = 0;
      advancePrefix();

      const chunkHasher = startChunkHasher(part.path);
      try {
        await fetchMissing(chunkHasher);
      } finally {
        await chunkHasher.close();
      }

      const digest = await hasher.finish(size);
      await hasher.close();
      hasher = null;
      if (digest === model.sha256) break;
      // Every chunk matched its list entry when it arrived, yet the file is not the signed one:
      // either a journalled chunk changed on disk since, or the list does not describe the file.
      // Reading every chunk back tells the two apart; the first is refetched, once.
      const all = Array.from({ length: count }, (_, i) => i);
      const onDisk = await hashChunks(part.path, size, chunkSize, all);
      const bad = all.filter((i) => onDisk[i] !== list[i]);
      if (bad.length === 0 || round > 0) {
        await part.close();
        await staging.discardChunked(model.sha256);
        if (bad.length > 0) {
          // Verified on arrival twice, different on disk twice: the node's storage, not the snapshot.
          throw new ApplyError('STORE_FAILED', `model ${label}: chunks ${bad.join(', ')} read back other than they were written and verified`);
        }
        throw new ApplyError(
          'CHUNK_LIST_INVALID',
          `model ${label}: every chunk matches its chunk list, but the file hashes to ${digest}, expected sha256 ${model.sha256}`,
        );
      }
      await part.unmark(bad);
      for (const i of bad) verified.delete(i);
    }

    // The data of every chunk was flushed before its journal entry; the rename makes it the blob.
    await part.close();
    await staging.commitChunked(model.sha256);
    options.onProgress?.(size, size, detail());
    return { bytesFetched, chunksResumed, mirrors: mirrors.map(progressOf) };

    /** Fetches every chunk not yet verified, over all mirrors; returns when all are verified and journalled. */
    async function fetchMissing(chunkHasher: ChunkHasher): Promise<void> {
      const open: ChunkState[] = [];
      for (let i = 0; i < count; i++) if (!verified.has(i)) open.push(newChunkState(i));
      let remaining = open.length;
      const flights = new Set<Flight>();
      let fatal: Fatal | null = null;
      let reported = 0;
      let sinceReport = 0;
      // Bytes written and not taken back: what progress reports (never more than once per byte).
      let settledBytes = 0;
      const resumedBytes = [...verified].reduce((n, i) => n + lengthOf(i), 0);

      // Lanes wait for one another through this: any piece finishing or failing wakes them.
      let wake: () => void = () => undefined;
      let changed = new Promise<void>((resolve) => {
        wake = resolve;
      });
      const notify = () => {
        const resolve = wake;
        changed = new Promise<void>((r) => {
          wake = r;
        });
        resolve();
      };

      // Journal writes: batched, one at a time, each flushing the data before recording it.
      const toMark: number[] = [];
      let flushing: Promise<void> | null = null;
      const kickFlush = () => {
        if (flushing !== null || toMark.length === 0) return;
        flushing = (async () => {
          try {
            while (toMark.length > 0) await part.markDone(toMark.splice(0));
          } catch (error) {
            fatal ??= new Fatal(storeFailure(error, label));
            notify();
          } finally {
            flushing = null;
          }
        })();
      };

      let unflushed = 0;
      let background: Promise<void> | null = null;
      /** Counts written bytes and starts a background flush every FLUSH_EVERY of them. */
      const countWritten = (bytes: number) => {
        unflushed += bytes;
        if (unflushed < FLUSH_EVERY || background !== null) return;
        unflushed = 0;
        background = part
          .flush()
          .catch((error: unknown) => {
            fatal ??= new Fatal(storeFailure(error, label));
            notify();
          })
          .finally(() => {
            background = null;
          });
      };

      const report = (force = false) => {
        if (!force && sinceReport < PROGRESS_EVERY) return;
        sinceReport = 0;
        reported = Math.max(reported, Math.min(resumedBytes + settledBytes, size));
        options.onProgress?.(reported, size, detail());
      };

      const pickMirror = (): Mirror | number | null => {
        const now = clock.now();
        const live = mirrors.filter((m) => m.failure === null);
        if (live.length === 0) return null;
        // A mirror awaiting a verdict is not ready; the verdict wakes the lanes (notify).
        const ready = live.filter((m) => m.notBefore <= now && m.checking === 0);
        if (ready.length === 0) return Math.min(...live.map((m) => m.notBefore)) - now;
        // Unmeasured mirrors are assumed as fast as the best measured one, so each gets tried.
        const best = Math.max(0, ...mirrors.map((m) => m.rate ?? 0)) || 1;
        let choice: Mirror | null = null;
        let score = Number.POSITIVE_INFINITY;
        for (const m of ready) {
          // The time a new piece would take there, shared with those already in flight on it.
          const s = (m.active + 1) / (m.rate ?? best);
          if (s < score) {
            score = s;
            choice = m;
          }
        }
        return choice;
      };

      /**
       * The next piece for a connection to `mirror`: of the lowest chunk already given to it;
       * else of the lowest chunk no live mirror has (it takes the chunk); else of the lowest
       * chunk with pieces left, from that chunk's own mirror (one mirror per chunk, so a wrong
       * chunk always names the mirror that served it).
       */
      const takeWork = (mirror: Mirror): { chunk: ChunkState; mirror: Mirror } | null => {
        const now = clock.now();
        let unowned: ChunkState | null = null;
        let other: ChunkState | null = null;
        for (const c of open) {
          if (c.todo.length === 0) continue;
          const owner = c.mirror !== null && c.mirror.failure === null ? c.mirror : null;
          if (owner === mirror) return { chunk: c, mirror };
          if (owner === null) unowned ??= c;
          else if (owner.notBefore <= now) other ??= c;
        }
        if (unowned !== null) {
          // A chunk that must come from one mirror starts over when its mirror was dropped half-way.
          if (unowned.pinned && unowned.sources.size > 0 && unowned.flights === 0) resetChunk(unowned);
          unowned.mirror = mirror;
          return { chunk: unowned, mirror };
        }
        if (other?.mirror != null) return { chunk: other, mirror: other.mirror };
        return null;
      };

      /** With nothing left to start, takes back a piece a much slower mirror would finish last. */
      const steal = (): boolean => {
        const now = clock.now();
        const fastest = mirrors.filter((m) => m.failure === null && m.rate !== null).sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0))[0];
        if (fastest?.rate == null) return false;
        let victim: Flight | null = null;
        let worst = 0;
        for (const f of flights) {
          if (f.stolen || f.mirror === fastest || f.chunk.pinned) continue;
          const elapsed = Math.max(1, now - f.startedAt);
          const rate = f.received / elapsed;
          const remaining = f.to - f.from - f.received;
          const finishIn = rate > 0 ? remaining / rate : Number.POSITIVE_INFINITY;
          const alternative = (f.to - f.from) / fastest.rate;
          if (elapsed >= STEAL_MIN_MS && finishIn > STEAL_FACTOR * alternative + STEAL_MIN_MS && finishIn > worst) {
            worst = finishIn;
            victim = f;
          }
        }
        if (victim === null) return false;
        // What the slow mirror showed on this piece is its rate now, measured or not, so the piece does not go straight back to it.
        const shown = victim.received / Math.max(1, now - victim.startedAt);
        victim.mirror.rate = Math.min(victim.mirror.rate ?? Number.POSITIVE_INFINITY, shown);
        victim.stolen = true;
        // The rest of its chunk goes to the faster mirror too.
        victim.chunk.mirror = fastest;
        victim.abort.abort(new Error('taken back for a faster mirror'));
        return true;
      };

      /** Chunks nothing was asked for yet. */
      const untouched = () => {
        let n = 0;
        for (const c of open) if (c.flights === 0 && c.settled.size === 0 && c.todo.length > 0 && c.todo[0]!.from === c.start) n++;
        return n;
      };

      /**
       * With nothing left to start and no piece to take back, gives an idle connection the second
       * half of what the piece with the most left has still to come, from the same mirror (so a
       * wrong chunk still names its mirror); the tail then runs on every connection.
       */
      const split = (): boolean => {
        let best: Flight | null = null;
        let most = 0;
        for (const f of flights) {
          if (f.stolen || f.chunk.pinned || f.mirror.failure !== null || f.mirror.notBefore > clock.now()) continue;
          const left = f.to - (f.from + f.received);
          if (left > most) {
            most = left;
            best = f;
          }
        }
        if (best === null || most < 2 * MIN_SPLIT) return false;
        const mid = best.to - Math.floor(most / 2);
        best.chunk.todo.push({ from: mid, to: best.to });
        best.chunk.todo.sort((a, b) => a.from - b.from);
        best.to = mid;
        best.split = true;
        return true;
      };

      /** Starts the chunk over: every piece to fetch again, nothing hashed, no mirror chosen. */
      const resetChunk = (c: ChunkState) => {
        chunkHasher.drop(c.hashJob);
        for (const [from, entry] of c.settled) settledBytes -= entry.to - from;
        Object.assign(c, freshPieces(c));
      };

      /**
       * Hands what is written past the chunk's hash front, without a gap, to the hasher; once
       * every byte is written and no piece is in flight, asks for the digest and checks it.
       */
      const advance = (c: ChunkState) => {
        if (c.checking !== null || fatal !== null || verified.has(c.index)) return;
        let front = c.hashedTo;
        for (let moved = true; moved; ) {
          moved = false;
          for (const [from, entry] of c.settled) {
            if (from <= front && front < entry.to) {
              front = entry.to;
              moved = true;
            }
          }
        }
        const from = c.hashedTo;
        c.hashedTo = front;
        if (front < c.end || c.flights > 0 || c.todo.length > 0) {
          if (front > from) chunkHasher.update(c.hashJob, from, front);
          return;
        }
        const job = c.hashJob;
        const judged = [...c.sources];
        for (const m of judged) m.checking++;
        const settle = () => {
          c.checking = null;
          for (const m of judged) m.checking--;
        };
        c.checking = chunkHasher.finish(job, from, front).then(
          (digest) => {
            settle();
            if (fatal === null && c.hashJob === job) complete(c, digest);
            notify();
          },
          (error: unknown) => {
            settle();
            fatal ??= new Fatal(storeFailure(error, label));
            notify();
          },
        );
      };

      /** Every byte of the chunk is written and hashed: it counts if its digest is the list's. */
      const complete = (c: ChunkState, digest: string) => {
        if (digest === list[c.index]) {
          for (const [from, entry] of c.settled) entry.mirror.bytes += entry.to - from;
          verified.add(c.index);
          open.splice(open.indexOf(c), 1);
          remaining--;
          advancePrefix();
          toMark.push(c.index);
          kickFlush();
          return;
        }
        const only = c.sources.size === 1 ? [...c.sources][0]! : null;
        resetChunk(c);
        const error = new ApplyError(
          'MIRROR_CHUNK_MISMATCH',
          `${only?.host ?? 'mirrors'}: ${chunkLabel(c.index)} hashes to ${digest}, the chunk list has ${list[c.index]}`,
        );
        if (only !== null) blame(only, c.index, error);
        // Pieces from several mirrors: which one was wrong is unknown, so the chunk comes from one mirror next time.
        else c.pinned = true;
      };

      const lane = async (): Promise<void> => {
        for (;;) {
          if (fatal !== null) return;
          if (options.signal?.aborted) {
            fatal = new Fatal(new ApplyError('ABORTED', `download of ${label} was cancelled (verified chunks are kept for a resume)`));
            notify();
            return;
          }
          if (remaining === 0) return;
          const mirror = pickMirror();
          if (mirror === null) {
            // Every mirror is out: the pieces still in flight may finish, nothing more can start.
            if (flights.size === 0 && !open.some((c) => c.checking !== null)) {
              fatal = new Fatal(
                allMirrorsFailed(
                  label,
                  mirrors.flatMap((m) => (m.failure ? [m.failure] : [])),
                ),
              );
              notify();
              return;
            }
            await changed;
            continue;
          }
          if (typeof mirror === 'number') {
            await Promise.race([changed, clock.sleep(Math.max(1, mirror), options.signal).catch(() => undefined)]);
            continue;
          }
          const work = takeWork(mirror);
          if (work === null) {
            if (!steal() && split()) continue;
            await Promise.race([changed, clock.sleep(STEAL_MIN_MS, options.signal).catch(() => undefined)]);
            continue;
          }
          const { chunk } = work;
          let range = chunk.todo.shift() as { from: number; to: number };
          if (range.from === chunk.start && chunk.settled.size === 0 && chunk.flights === 0 && untouched() > connections) {
            // Far from the end, a chunk comes whole on one connection (one request, not one per
            // piece). Only the last chunks are split, so that they end in file order and the
            // whole-file hash is not left with several of them after the last byte.
            range = { from: chunk.start, to: chunk.todo.at(-1)?.to ?? range.to };
            chunk.todo = [];
          }
          const flight: Flight = {
            chunk,
            ...range,
            mirror: work.mirror,
            startedAt: clock.now(),
            received: 0,
            abort: new AbortController(),
            stolen: false,
            split: false,
          };
          flights.add(flight);
          flight.mirror.active++;
          chunk.flights++;
          chunk.sources.add(flight.mirror);
          const entry: Settled = { to: flight.from, mirror: flight.mirror };
          chunk.settled.set(flight.from, entry);
          try {
            await fetchPiece(flight, entry);
            flight.mirror.strikes = 0;
            const took = Math.max(1, clock.now() - flight.startedAt);
            const rate = (flight.to - flight.from) / took;
            flight.mirror.rate = flight.mirror.rate === null ? rate : 0.5 * flight.mirror.rate + 0.5 * rate;
          } catch (error) {
            if (flight.stolen && chunk.hashedTo <= flight.from) {
              // Taken back: the faster mirror fetches all of it, so the slow one is credited nothing.
              settledBytes -= entry.to - flight.from;
              chunk.settled.delete(flight.from);
              chunk.todo.push({ from: flight.from, to: flight.to });
            } else {
              // What was written stays; the rest is asked for again.
              if (entry.to === flight.from) chunk.settled.delete(flight.from);
              chunk.todo.push({ from: entry.to, to: flight.to });
            }
            chunk.todo.sort((a, b) => a.from - b.from);
            if (chunk.settled.size === 0 && chunk.flights === 1) {
              // Nothing of it came from this mirror: whichever is ready may take all of it.
              chunk.mirror = null;
              chunk.sources.clear();
            }
            if (error instanceof Fatal) fatal ??= error;
            else if (options.signal?.aborted)
              fatal ??= new Fatal(new ApplyError('ABORTED', `download of ${label} was cancelled (verified chunks are kept for a resume)`, { cause: error }));
            else if (!flight.stolen) blame(flight.mirror, chunk.index, error);
          } finally {
            flight.mirror.active--;
            chunk.flights--;
            flights.delete(flight);
            advance(chunk);
            report();
            notify();
          }
          // The connection that completed a chunk waits for its verdict too (the hasher has at
          // most its last batch left, a millisecond), so its next pick sees the mirror judged
          // and measured; meanwhile the other connections skip that mirror (`checking`).
          await chunk.checking;
        }
      };

      /** Decides what a mirror's failure costs it: a pause and a strike, or no more work. */
      const blame = (mirror: Mirror, chunk: number, error: unknown) => {
        if (mirror.failure !== null) return;
        const transient = error instanceof HttpStatusError ? error.transient : !(error instanceof ApplyError);
        if (transient && ++mirror.strikes < maxStrikes) {
          mirror.notBefore = clock.now() + baseDelay * 2 ** (mirror.strikes - 1);
          return;
        }
        const failure = mirrorFailure(mirror.index, mirror.host, error);
        mirror.failure = { ...failure, detail: `${chunkLabel(chunk)}: ${failure.detail}` };
      };

      /**
       * One ranged request for a piece: each batch written in place, then handed to the chunk's
       * hash (read back in a worker) once everything before it is written too.
       */
      const fetchPiece = async (flight: Flight, entry: Settled): Promise<void> => {
        try {
          await requestPiece(flight, entry);
        } catch (error) {
          // Split, and everything up to its new end is written: the rest is another connection's.
          if (flight.split && entry.to >= flight.to && !(error instanceof Fatal)) return;
          throw error;
        }
        if (flight.split && entry.to < flight.to) throw new Error(`piece of ${chunkLabel(flight.chunk.index)} ended at ${entry.to}, before ${flight.to}`);
      };

      const requestPiece = async (flight: Flight, entry: Settled): Promise<void> => {
        const { chunk: c, mirror, from, to } = flight;
        const length = to - from;
        const signal = options.signal ? AbortSignal.any([options.signal, flight.abort.signal]) : flight.abort.signal;
        let position = from;
        // Writes of one piece land one after another, so what is written is always one range from its start.
        let writes: Promise<void> = Promise.resolve();
        const accept = (received: Uint8Array[], receivedBytes: number): Promise<void> => {
          const at = position;
          // Past a split point: the connection has done its part.
          if (at >= flight.to) return Promise.reject(new SplitReached());
          const bytes = Math.min(receivedBytes, flight.to - at);
          const batch = bytes === receivedBytes ? received : trimmed(received, bytes);
          position += bytes;
          flight.received += bytes;
          bytesFetched += bytes;
          sinceReport += bytes;
          const written = writes.then(async () => {
            try {
              await part.write(at, batch);
            } catch (error) {
              throw new Fatal(storeFailure(error, label));
            }
            entry.to = at + bytes;
            settledBytes += bytes;
            countWritten(bytes);
            report();
            advance(c);
          });
          writes = written.catch(() => undefined);
          return written;
        };

        if (downloader.readRange !== undefined) {
          await downloader.readRange(mirror.url, { start: from, end: to, size, signal }, (batch) => accept([batch], batch.length));
          return;
        }
        const response = await downloader.open(mirror.url, { offset: from, end: to, signal });
        if (response.totalBytes !== null && response.totalBytes !== size) {
          response.body.destroy?.();
          throw new ApplyError('SIZE_MISMATCH', `${mirror.host}: expected ${size} bytes, the server has ${response.totalBytes}`);
        }
        if (response.offset !== from) {
          response.body.destroy?.();
          throw new ApplyError('MIRROR_NO_RANGES', `${mirror.host}: asked for bytes from ${from}, the answer starts at ${response.offset}`);
        }
        let batch: Uint8Array[] = [];
        let batchBytes = 0;
        let writeError: unknown = null;
        const inFlight: Promise<void>[] = [];
        const flush = () => {
          inFlight.push(
            accept(batch, batchBytes).catch((error: unknown) => {
              writeError ??= error;
            }),
          );
          batch = [];
          batchBytes = 0;
        };
        try {
          for await (const data of response.body) {
            if (writeError !== null) break;
            if (flight.received + batchBytes + data.length > length) {
              throw new ApplyError('SIZE_MISMATCH', `${mirror.host}: more than the ${length} bytes of ${chunkLabel(c.index)} asked for arrived`);
            }
            batch.push(data);
            batchBytes += data.length;
            if (batchBytes >= WRITE_BATCH) {
              flush();
              if (inFlight.length >= MAX_IN_FLIGHT) await inFlight.shift();
            }
          }
        } finally {
          // Whatever was received is written before the piece is handed on, so a refetch of the
          // same range by another lane never races a late write of this one.
          if (batchBytes > 0 && writeError === null) flush();
          await Promise.all(inFlight);
          response.body.destroy?.();
        }
        if (writeError !== null)
          throw writeError instanceof Fatal || writeError instanceof SplitReached ? writeError : new Fatal(storeFailure(writeError, label));
        if (flight.received < flight.to - from) throw new Error(`connection closed after ${flight.received} of ${length} bytes of ${chunkLabel(c.index)}`);
      };

      const left = open.reduce((n, c) => n + c.end - c.start, 0);
      // As many connections as there are pieces, or halves a split could make.
      await Promise.all(Array.from({ length: Math.min(connections, Math.max(1, Math.ceil(left / MIN_SPLIT))) }, () => lane()));
      await background;
      while (flushing !== null || toMark.length > 0) {
        kickFlush();
        await flushing;
      }
      if (fatal !== null) throw (fatal as Fatal).error;
      report(true);
    }
  } catch (error) {
    await hasher?.close();
    await part.close();
    throw error;
  }

  function progressOf(m: Mirror): MirrorProgress {
    return { index: m.index, host: m.host, bytes: m.bytes, connections: m.active, failure: m.failure };
  }

  function detail(): DownloadDetail {
    const seconds = Math.max(0.001, (clock.now() - startedAt) / 1000);
    return { bytesPerSecond: Math.round(bytesFetched / seconds), mirrors: mirrors.map(progressOf) };
  }
}

/** The first `bytes` of a list of buffers. */
function trimmed(buffers: Uint8Array[], bytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let left = bytes;
  for (const b of buffers) {
    if (left <= 0) break;
    out.push(b.byteLength <= left ? b : b.subarray(0, left));
    left -= b.byteLength;
  }
  return out;
}

/** The node's own disk failing: a full one is INSUFFICIENT_SPACE, anything else STORE_FAILED. */
function storeFailure(error: unknown, label: string): ApplyError {
  if (error instanceof ApplyError) return error;
  if (isNoSpace(error)) return new ApplyError('INSUFFICIENT_SPACE', `model ${label}: the disk filled up`, { cause: error });
  return new ApplyError('STORE_FAILED', `model ${label}: writing the staged file failed: ${messageOf(error)}`, { cause: error });
}

export type { ChunkedPart };
