import { createHash } from 'node:crypto';

import { type Model, SnapshotError, chunkCount, chunkListByteLength, verifyChunkList } from '@resultity/snapshot';

import { ApplyError, type MirrorFailure, messageOf } from './errors.js';
import { type PrefixHasher, hashChunks, startPrefixHasher } from './file-hash.js';
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
/** Bytes gathered from a socket before one positional write; small, since 8 connections stream at once. */
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
  failure: MirrorFailure | null;
}

interface Flight {
  chunk: number;
  mirror: Mirror;
  startedAt: number;
  received: number;
  abort: AbortController;
  /** Taken back for a faster mirror: its failure is not the mirror's fault. */
  stolen: boolean;
}

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
  ports: Pick<ChunkPorts, 'lists'>,
  signal?: AbortSignal,
): Promise<string[]> {
  const label = `${model.name}@${model.version}`;
  const hex = model.chunks.sha256;
  const maxBytes = chunkListByteLength(chunkCount(model.size, model.chunks.size));
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
  try {
    return verifyChunkList(bytes, model);
  } catch (cause) {
    if (cause instanceof SnapshotError && cause.code === 'DIGEST_MISMATCH') {
      throw new ApplyError('CHUNK_LIST_UNAVAILABLE', `model ${label}: the origin served another chunk list than ${hex}`, { cause });
    }
    throw new ApplyError('CHUNK_LIST_INVALID', `model ${label}: its chunk list is refused: ${messageOf(cause)}`, { cause });
  }
}

/**
 * Downloads a model that has a chunk list (SPEC §3 `chunks`): ranged requests in parallel,
 * spread over every mirror, each chunk hashed as it arrives and written in place into a
 * preallocated staged file, counted only once its digest matches the list, and recorded in a
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

  const mirrors: Mirror[] = model.urls.map((url, index) => ({
    index,
    url,
    host: hostOf(url),
    active: 0,
    bytes: 0,
    rate: null,
    strikes: 0,
    notBefore: 0,
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

      await fetchMissing();

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
    async function fetchMissing(): Promise<void> {
      const pending: number[] = [];
      for (let i = 0; i < count; i++) if (!verified.has(i)) pending.push(i);
      const flights = new Map<number, Flight>();
      let fatal: Fatal | null = null;
      let reported = 0;
      let sinceReport = 0;

      // Lanes wait for one another through this: any chunk finishing or failing wakes them.
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
        let done = 0;
        for (const i of verified) done += lengthOf(i);
        for (const f of flights.values()) done += f.received;
        reported = Math.max(reported, Math.min(done, size));
        options.onProgress?.(reported, size, detail());
      };

      const pickMirror = (): Mirror | number | null => {
        const now = clock.now();
        const live = mirrors.filter((m) => m.failure === null);
        if (live.length === 0) return null;
        const ready = live.filter((m) => m.notBefore <= now);
        if (ready.length === 0) return Math.min(...live.map((m) => m.notBefore)) - now;
        // Unmeasured mirrors are assumed as fast as the best measured one, so each gets tried.
        const best = Math.max(0, ...mirrors.map((m) => m.rate ?? 0)) || 1;
        let choice: Mirror | null = null;
        let score = Number.POSITIVE_INFINITY;
        for (const m of ready) {
          // The time a new chunk would take there, shared with those already in flight on it.
          const s = (m.active + 1) / (m.rate ?? best);
          if (s < score) {
            score = s;
            choice = m;
          }
        }
        return choice;
      };

      /** With nothing left to start, takes back a chunk a much slower mirror would finish last. */
      const steal = (): boolean => {
        const now = clock.now();
        const fastest = mirrors.filter((m) => m.failure === null && m.rate !== null).sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0))[0];
        if (fastest?.rate == null) return false;
        let victim: Flight | null = null;
        let worst = 0;
        for (const f of flights.values()) {
          if (f.stolen || f.mirror === fastest) continue;
          const elapsed = Math.max(1, now - f.startedAt);
          const rate = f.received / elapsed;
          const remaining = lengthOf(f.chunk) - f.received;
          const finishIn = rate > 0 ? remaining / rate : Number.POSITIVE_INFINITY;
          const alternative = lengthOf(f.chunk) / fastest.rate;
          if (elapsed >= STEAL_MIN_MS && finishIn > STEAL_FACTOR * alternative + STEAL_MIN_MS && finishIn > worst) {
            worst = finishIn;
            victim = f;
          }
        }
        if (victim === null) return false;
        // What the slow mirror showed on this chunk is its rate now, measured or not, so the chunk does not go straight back to it.
        const shown = victim.received / Math.max(1, now - victim.startedAt);
        victim.mirror.rate = Math.min(victim.mirror.rate ?? Number.POSITIVE_INFINITY, shown);
        victim.stolen = true;
        victim.abort.abort(new Error('taken back for a faster mirror'));
        return true;
      };

      const lane = async (): Promise<void> => {
        for (;;) {
          if (fatal !== null) return;
          if (options.signal?.aborted) {
            fatal = new Fatal(new ApplyError('ABORTED', `download of ${label} was cancelled (verified chunks are kept for a resume)`));
            notify();
            return;
          }
          if (pending.length === 0) {
            if (flights.size === 0) return;
            steal();
            await Promise.race([changed, clock.sleep(STEAL_MIN_MS, options.signal).catch(() => undefined)]);
            continue;
          }
          const mirror = pickMirror();
          if (mirror === null) {
            // Every mirror is out: the chunks still in flight may finish, nothing more can start.
            if (flights.size === 0) {
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
          const chunk = pending.shift() as number;
          const flight: Flight = { chunk, mirror, startedAt: clock.now(), received: 0, abort: new AbortController(), stolen: false };
          flights.set(chunk, flight);
          mirror.active++;
          try {
            await fetchChunk(flight);
            mirror.strikes = 0;
            mirror.bytes += lengthOf(chunk);
            const took = Math.max(1, clock.now() - flight.startedAt);
            const rate = lengthOf(chunk) / took;
            mirror.rate = mirror.rate === null ? rate : 0.5 * mirror.rate + 0.5 * rate;
            verified.add(chunk);
            advancePrefix();
            toMark.push(chunk);
            kickFlush();
          } catch (error) {
            pending.unshift(chunk);
            pending.sort((a, b) => a - b);
            if (error instanceof Fatal) fatal ??= error;
            else if (options.signal?.aborted)
              fatal ??= new Fatal(new ApplyError('ABORTED', `download of ${label} was cancelled (verified chunks are kept for a resume)`, { cause: error }));
            else if (!flight.stolen) blame(mirror, chunk, error);
          } finally {
            mirror.active--;
            flights.delete(chunk);
            report();
            notify();
          }
        }
      };

      /** Decides what a mirror's failure costs it: a pause and a strike, or no more work. */
      const blame = (mirror: Mirror, chunk: number, error: unknown) => {
        const transient = error instanceof HttpStatusError ? error.transient : !(error instanceof ApplyError);
        if (transient && ++mirror.strikes < maxStrikes) {
          mirror.notBefore = clock.now() + baseDelay * 2 ** (mirror.strikes - 1);
          return;
        }
        const failure = mirrorFailure(mirror.index, mirror.host, error);
        mirror.failure = { ...failure, detail: `${chunkLabel(chunk)}: ${failure.detail}` };
      };

      /** One ranged request: hashed as it streams, written in place, verified against the list. */
      const fetchChunk = async (flight: Flight): Promise<void> => {
        const { chunk, mirror } = flight;
        const start = chunk * chunkSize;
        const length = lengthOf(chunk);
        const signal = options.signal ? AbortSignal.any([options.signal, flight.abort.signal]) : flight.abort.signal;
        if (downloader.readRange !== undefined) {
          const hash = createHash('sha256');
          let written = start;
          await downloader.readRange(mirror.url, { start, end: start + length, size, signal }, async (batch) => {
            hash.update(batch);
            flight.received += batch.length;
            bytesFetched += batch.length;
            sinceReport += batch.length;
            report();
            const at = written;
            written += batch.length;
            try {
              await part.write(at, [batch]);
            } catch (error) {
              throw new Fatal(storeFailure(error, label));
            }
            countWritten(batch.length);
          });
          const digest = hash.digest('hex');
          if (digest !== list[chunk]) {
            throw new ApplyError('MIRROR_CHUNK_MISMATCH', `${mirror.host}: ${chunkLabel(chunk)} hashes to ${digest}, the chunk list has ${list[chunk]}`);
          }
          return;
        }
        const response = await downloader.open(mirror.url, { offset: start, end: start + length, signal });
        if (response.totalBytes !== null && response.totalBytes !== size) {
          response.body.destroy?.();
          throw new ApplyError('SIZE_MISMATCH', `${mirror.host}: expected ${size} bytes, the server has ${response.totalBytes}`);
        }
        if (response.offset !== start) {
          response.body.destroy?.();
          throw new ApplyError('MIRROR_NO_RANGES', `${mirror.host}: asked for bytes from ${start}, the answer starts at ${response.offset}`);
        }
        const hash = createHash('sha256');
        let batch: Uint8Array[] = [];
        let batchBytes = 0;
        let written = start;
        let writeError: unknown = null;
        const inFlight: Promise<void>[] = [];
        const flush = () => {
          const chunks = batch;
          const at = written;
          written += batchBytes;
          batch = [];
          batchBytes = 0;
          inFlight.push(
            part.write(at, chunks).then(
              () => countWritten(chunks.reduce((n, c) => n + c.byteLength, 0)),
              (error: unknown) => {
                writeError ??= error;
              },
            ),
          );
        };
        try {
          for await (const data of response.body) {
            if (writeError !== null) break;
            if (flight.received + data.length > length) {
              throw new ApplyError('SIZE_MISMATCH', `${mirror.host}: more than the ${length} bytes of ${chunkLabel(chunk)} arrived`);
            }
            hash.update(data);
            flight.received += data.length;
            bytesFetched += data.length;
            sinceReport += data.length;
            report();
            batch.push(data);
            batchBytes += data.length;
            if (batchBytes >= WRITE_BATCH) {
              flush();
              if (inFlight.length >= MAX_IN_FLIGHT) await inFlight.shift();
            }
          }
        } finally {
          // Whatever was received is written before the chunk is handed on, so a refetch of the
          // same chunk by another lane never races a late write of this one.
          if (batchBytes > 0 && writeError === null) flush();
          await Promise.all(inFlight);
          response.body.destroy?.();
        }
        if (writeError !== null) throw new Fatal(storeFailure(writeError, label));
        if (flight.received < length) throw new Error(`connection closed after ${flight.received} of ${length} bytes of ${chunkLabel(chunk)}`);
        const digest = hash.digest('hex');
        if (digest !== list[chunk]) {
          throw new ApplyError('MIRROR_CHUNK_MISMATCH', `${mirror.host}: ${chunkLabel(chunk)} hashes to ${digest}, the chunk list has ${list[chunk]}`);
        }
      };

      await Promise.all(Array.from({ length: Math.min(connections, Math.max(1, pending.length)) }, () => lane()));
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

/** The node's own disk failing: a full one is INSUFFICIENT_SPACE, anything else STORE_FAILED. */
function storeFailure(error: unknown, label: string): ApplyError {
  if (error instanceof ApplyError) return error;
  if (isNoSpace(error)) return new ApplyError('INSUFFICIENT_SPACE', `model ${label}: the disk filled up`, { cause: error });
  return new ApplyError('STORE_FAILED', `model ${label}: writing the staged file failed: ${messageOf(error)}`, { cause: error });
}

export type { ChunkedPart };
