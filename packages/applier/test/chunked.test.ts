import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { type Nginx, freeLoopbackPort, startNginx, tempDir } from '@resultity/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import {
  DockerEngine,
  FileFlagsStore,
  FsModelStore,
  HttpDownloader,
  OriginChunkLists,
  execute,
  fetchChunked,
  fetchModel,
  systemClock,
  type ChunkStaging,
  type DownloadDetail,
  type ProgressEvent,
} from '../src/index.js';
import { chunkPorts, chunkedModel, chunkListOf, chunkListPath, MiB, NETWORK } from './support/chunked-model.js';
import { failure } from './support/failure.js';
import { generatedBytes, sha256 } from './support/model-server.js';
import { type RangeMirror, startRangeMirror } from './support/range-mirror.js';

// 6.5 chunks of 1 MiB (the smallest chunk the SPEC allows): the last chunk is shorter.
const bytes = generatedBytes(6 * MiB + 512 * 1024, 71);
const CHUNK = MiB;
const COUNT = 7;

let origin: RangeMirror;
let dir: { path: string; cleanup: () => Promise<void> };
const extra: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  origin = await startRangeMirror();
});
afterAll(async () => {
  await origin.close();
});
beforeEach(async () => {
  dir = await tempDir('resultity-applier-chunked-');
});
afterEach(async () => {
  for (const server of extra.splice(0)) await server.close();
  await dir.cleanup();
});

async function mirrors(...faults: Parameters<typeof startRangeMirror>[0][]): Promise<RangeMirror[]> {
  const started = await Promise.all(faults.map((f) => startRangeMirror(f)));
  for (const m of started) {
    m.serve('/model.bin', bytes);
    extra.push(m);
  }
  return started;
}

function ports(options: { connections?: number; idleTimeoutMs?: number; store?: FsModelStore; pieceBytes?: number } = {}) {
  const downloader = new HttpDownloader({ idleTimeoutMs: options.idleTimeoutMs ?? 5000, allowPrivateAddresses: true });
  const models = options.store ?? new FsModelStore(join(dir.path, 'store'));
  return { models, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, models, options.connections, options.pieceBytes) };
}

async function blob(hex: string): Promise<Buffer> {
  return readFile(join(dir.path, 'store', 'sha256', hex));
}

async function staged(): Promise<string[]> {
  return readdir(join(dir.path, 'store', 'staging')).catch(() => []);
}

describe('fetchChunked', () => {
  describe('from nginx on three ports', () => {
    let nginx: Nginx;
    beforeAll(async () => {
      const root = join(process.env.TMPDIR ?? '/tmp', `resultity-chunked-nginx-${process.pid}`);
      await mkdir(root, { recursive: true });
      await writeFile(join(root, 'model.bin'), bytes);
      nginx = await startNginx({ root, work: root, ports: 3 });
    });
    afterAll(async () => {
      await nginx.close();
    });

    it('fetches every chunk as a range, spread over all mirrors, and stores the verified file', async () => {
      const model = chunkedModel(
        'spread',
        bytes,
        CHUNK,
        nginx.urls.map((u) => `${u}/model.bin`),
        origin,
      );
      const progress: { done: number; detail: DownloadDetail | undefined }[] = [];
      const report = await fetchChunked(model, ports({ connections: 4 }), { onProgress: (done, _total, detail) => progress.push({ done, detail }) });
      expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
      expect(await staged()).toEqual([]);
      expect(report.bytesFetched).toBe(bytes.length);
      expect(report.chunksResumed).toBe(0);
      expect(report.mirrors.every((m) => m.bytes > 0 && m.failure === null)).toBe(true);
      expect(report.mirrors.reduce((n, m) => n + m.bytes, 0)).toBe(bytes.length);
      expect(progress.at(-1)?.done).toBe(bytes.length);
      expect(progress.map((p) => p.done)).toEqual([...progress.map((p) => p.done)].sort((a, b) => a - b));
      expect(progress.at(-1)?.detail?.mirrors).toHaveLength(3);
    });

    it('falls back to one verified stream when the origin has no chunk list, through the mirrors in order, and records the fallback', async () => {
      const model = chunkedModel('no-list-nginx', bytes, CHUNK, [`${nginx.urls[0]}/missing.bin`, `${nginx.urls[1]}/model.bin`], origin);
      // The origin is nginx too, and it has no chunks/ directory: the list answers 404.
      const p = ports();
      const report = await fetchModel(model, { ...p, chunks: { ...p.chunks, lists: new OriginChunkLists(nginx.urls[2]!, NETWORK, p.downloader) } });
      expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
      expect(report.fallback).toMatchObject({ index: -1, code: 'CHUNK_LIST_UNAVAILABLE' });
      expect(report.fallback?.detail).toContain('one stream');
      expect(report.dropped.map((d) => [d.index, d.code])).toEqual([
        [-1, 'CHUNK_LIST_UNAVAILABLE'],
        [0, 'MIRROR_HTTP_STATUS'],
      ]);
      expect(await staged()).toEqual([]);
    });
  });

  it('takes a wrong chunk from another mirror, names the mirror that served it, and asks it for nothing more', async () => {
    // Every chunk the bad mirror serves is wrong: which chunks a loaded machine sends its way is
    // a matter of measured speed, but the first one it is asked for always comes back corrupt.
    const [good1, bad, good2] = await mirrors({}, { corruptAt: [0, 1, 2, 3, 4, 5, 6].map((i) => i * CHUNK) }, {});
    const model = chunkedModel(
      'bad-mirror',
      bytes,
      CHUNK,
      [good1!, bad!, good2!].map((m) => m.url('/model.bin')),
      origin,
    );
    const report = await fetchChunked(model, ports({ connections: 3 }));
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    const named = report.mirrors[1]!;
    expect(named.failure?.code).toBe('MIRROR_CHUNK_MISMATCH');
    expect(named.failure?.index).toBe(1);
    // One wrong chunk is enough: the mirror got no request after it, and is credited with nothing.
    expect(bad!.ranges(), JSON.stringify(bad!.ranges())).toHaveLength(1);
    expect(named.bytes).toBe(0);
    expect(report.mirrors.reduce((n, m) => n + m.bytes, 0)).toBe(bytes.length);
  });

  describe('a chunk larger than a request', () => {
    // 4 MiB chunks (the last 2.5 MiB) in 512 KiB pieces: several connections on one chunk at once.
    const PIECE = 512 * 1024;

    it('is fetched as pieces on several connections, in file order, hashed across them, and stored verified', async () => {
      const [m] = await mirrors({});
      const model = chunkedModel('pieces', bytes, 4 * CHUNK, [m!.url('/model.bin')], origin);
      const report = await fetchChunked(model, ports({ connections: 4, pieceBytes: PIECE }));
      expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
      const ranges = m!.ranges();
      expect(ranges.every(([start, end]) => start % PIECE === 0 && end - start + 1 <= PIECE)).toBe(true);
      expect(ranges.map(([start]) => start)).toEqual(Array.from({ length: 13 }, (_, i) => i * PIECE));
      expect(report.bytesFetched).toBe(bytes.length);
      expect(report.mirrors[0]).toMatchObject({ bytes: bytes.length, failure: null });
    });

    it('splits the last piece for idle connections: the rest of it comes over several at once', async () => {
      // 64 KiB every 20 ms per connection: one connection alone would take about 2 s for the 6.5 MiB.
      const [m] = await mirrors({ bytesPerTick: 64 * 1024 });
      const model = chunkedModel('split', bytes, 8 * CHUNK, [m!.url('/model.bin')], origin);
      const report = await fetchChunked(model, ports({ connections: 4, pieceBytes: 8 * CHUNK }));
      expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
      const starts = m!.ranges().map(([start]) => start);
      expect(starts[0]).toBe(0);
      expect(starts.length).toBeGreaterThanOrEqual(4);
      expect(report.mirrors[0]).toMatchObject({ bytes: bytes.length, failure: null });
      // What each connection received past its split point is not written, nor counted twice.
      expect(report.bytesFetched).toBe(bytes.length);
    });

    it('names a mirror that served one wrong piece, though the chunk came over several connections', async () => {
      // One byte wrong in the middle of each chunk: only a piece behind the hash front carries it.
      const [good, bad] = await mirrors({}, { corruptAt: [PIECE * 3, 4 * CHUNK + PIECE * 3] });
      const model = chunkedModel('bad-piece', bytes, 4 * CHUNK, [bad!.url('/model.bin'), good!.url('/model.bin')], origin);
      const report = await fetchChunked(model, ports({ connections: 4, pieceBytes: PIECE }));
      expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
      expect(report.mirrors[0]!.failure?.code).toBe('MIRROR_CHUNK_MISMATCH');
      expect(report.mirrors[0]!.bytes).toBe(0);
      expect(report.mirrors[1]).toMatchObject({ bytes: bytes.length, failure: null });
    });
  });

  it('works around a mirror that keeps failing, one that stalls, and one that ignores ranges', async () => {
    const [failing, stalling, whole, good] = await mirrors({ status: 503 }, { stallAt: [CHUNK, 3 * CHUNK] }, { ignoreRanges: true }, {});
    const model = chunkedModel(
      'unruly',
      bytes,
      CHUNK,
      [failing!, stalling!, whole!, good!].map((m) => m.url('/model.bin')),
      origin,
    );
    const report = await fetchChunked(model, ports({ connections: 4, idleTimeoutMs: 500 }), { maxAttemptsPerUrl: 2, retryDelayMs: 10 });
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(report.mirrors.map((m) => m.failure?.code ?? null)).toEqual(['MIRROR_HTTP_STATUS', 'MIRROR_STALLED', 'MIRROR_NO_RANGES', null]);
    // Hosts stay in the per-mirror detail (the local audit log).
    expect(report.mirrors[0]!.failure?.detail).toContain('127.0.0.1');
  });

  it('takes a chunk back from a mirror far slower than the others and fetches it from a faster one', async () => {
    // 4 KiB every 20 ms: a 1 MiB chunk would take that mirror about 5 s.
    const [fast, slow] = await mirrors({}, { bytesPerTick: 4 * 1024 });
    const model = chunkedModel('laggard', bytes, CHUNK, [fast!.url('/model.bin'), slow!.url('/model.bin')], origin);
    const report = await fetchChunked(model, ports({ connections: 2 }));
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    // It was asked, it was not blamed, and what it had started came from the other mirror.
    expect(slow!.ranges().length).toBeGreaterThan(0);
    expect(report.mirrors[1]).toMatchObject({ bytes: 0, failure: null });
    expect(report.mirrors[0]!.bytes).toBe(bytes.length);
  });

  it("follows a mirror's redirect for every range, crediting the mirror listed", async () => {
    const [target] = await mirrors({});
    const [redirecting] = await mirrors({ redirectTo: target!.url('/model.bin') });
    const model = chunkedModel('redirected', bytes, CHUNK, [redirecting!.url('/model.bin')], origin);
    const report = await fetchChunked(model, ports({ connections: 2 }));
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(target!.ranges()).toHaveLength(COUNT);
    expect(report.mirrors[0]!.bytes).toBe(bytes.length);
  });

  it('takes the streamed path of a downloader without the bare-socket reader, with the same verification', async () => {
    const [good, bad] = await mirrors({}, { corruptAt: [0, 2 * CHUNK] });
    const model = chunkedModel('streamed', bytes, CHUNK, [bad!.url('/model.bin'), good!.url('/model.bin')], origin);
    const real = new HttpDownloader({ idleTimeoutMs: 5000, allowPrivateAddresses: true });
    // The same real downloader, seen through the port's required method only.
    const downloader = { open: real.open.bind(real) };
    const models = new FsModelStore(join(dir.path, 'store'));
    const report = await fetchChunked(model, { models, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, models, 2) });
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(report.mirrors[0]!.failure?.code).toBe('MIRROR_CHUNK_MISMATCH');
  });

  it('fails with DOWNLOAD_FAILED naming every mirror when none can deliver, and keeps the verified chunks', async () => {
    const [a, b] = await mirrors({ corruptAt: [CHUNK, 3 * CHUNK, 5 * CHUNK] }, { status: 404 });
    const model = chunkedModel('none', bytes, CHUNK, [a!.url('/model.bin'), b!.url('/model.bin')], origin);
    const error = await failure(fetchChunked(model, ports({ connections: 1 })));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.message).toBe('model none@1.0.0: all 2 mirrors failed (MIRROR_CHUNK_MISMATCH, MIRROR_HTTP_STATUS)');
    expect(error.mirrors?.map((m) => [m.index, m.code])).toEqual([
      [0, 'MIRROR_CHUNK_MISMATCH'],
      [1, 'MIRROR_HTTP_STATUS'],
    ]);
    expect(existsSync(join(dir.path, 'store', 'sha256', model.sha256))).toBe(false);

    // The next apply, with an honest mirror, fetches only what the journal does not hold.
    const [honest] = await mirrors({});
    const report = await fetchChunked({ ...model, urls: [honest!.url('/model.bin')] }, ports());
    expect(report.chunksResumed).toBe(1);
    expect(honest!.ranges().map(([start]) => start)).not.toContain(0);
    expect(report.bytesFetched).toBe(bytes.length - CHUNK);
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
  });

  it('keeps the chunk list beside the staged file: a restart resumes while the origin is down, and a damaged kept list is fetched again', async () => {
    const [a, b] = await mirrors({ corruptAt: [CHUNK, 3 * CHUNK, 5 * CHUNK] }, { status: 404 });
    const model = chunkedModel('kept-list', bytes, CHUNK, [a!.url('/model.bin'), b!.url('/model.bin')], origin);
    expect((await failure(fetchChunked(model, ports({ connections: 1 })))).code).toBe('DOWNLOAD_FAILED');
    expect(await staged()).toContain(`${model.sha256}.list`);

    // The origin is down (nothing listens where it was), the mirrors are not.
    const [honest] = await mirrors({});
    const offline = ports();
    const down = new OriginChunkLists(`http://127.0.0.1:${await freeLoopbackPort()}`, NETWORK, offline.downloader);
    const report = await fetchChunked({ ...model, urls: [honest!.url('/model.bin')] }, { ...offline, chunks: { ...offline.chunks, lists: down } });
    expect(report.chunksResumed).toBe(1);
    expect(report.bytesFetched).toBe(bytes.length - CHUNK);
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    // Committed: nothing of the download is left in staging, the kept list included.
    expect(await staged()).toEqual([]);

    // A kept list that is not the signed one (torn, or another snapshot's) is not used: with the
    // origin down the download cannot start; with it up, the origin's list is fetched and kept.
    const other = chunkedModel('kept-list-2', generatedBytes(2 * MiB, 77), CHUNK, [honest!.url('/other.bin')], origin);
    honest!.serve('/other.bin', generatedBytes(2 * MiB, 77));
    await mkdir(join(dir.path, 'store', 'staging'), { recursive: true });
    await writeFile(join(dir.path, 'store', 'staging', `${other.sha256}.list`), '["not the list"]');
    const refused = await failure(fetchChunked(other, { ...offline, chunks: { ...offline.chunks, lists: down } }));
    expect(refused.code).toBe('CHUNK_LIST_UNAVAILABLE');
    await fetchChunked(other, ports());
    expect(sha256(await blob(other.sha256))).toBe(sha256(generatedBytes(2 * MiB, 77)));
  });

  it('refetches a journalled chunk whose bytes changed on disk, found by the whole-file check', async () => {
    const [a, b] = await mirrors({}, { status: 500 });
    const model = chunkedModel('rot', bytes, CHUNK, [a!.url('/model.bin')], origin);
    const store = new FsModelStore(join(dir.path, 'store'));
    // A first run that ends after every chunk is journalled but before the rename: cut by a mirror that only fails.
    a!.faults = { stallAt: [6 * CHUNK] };
    const first = await failure(fetchChunked(model, ports({ store, connections: 2, idleTimeoutMs: 300 }), { maxAttemptsPerUrl: 1 }));
    expect(first.code).toBe('DOWNLOAD_FAILED');
    const file = await open(join(dir.path, 'store', 'staging', `${model.sha256}.chunked`), 'r+');
    await file.write(Buffer.from('rotten'), 0, 6, 2 * CHUNK + 100);
    await file.close();
    a!.faults = {};
    const before = a!.ranges().length;
    const report = await fetchChunked({ ...model, urls: [a!.url('/model.bin'), b!.url('/model.bin')] }, ports({ store }), { retryDelayMs: 1 });
    expect(report.chunksResumed).toBe(6);
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(
      a!
        .ranges()
        .slice(before)
        .map(([start]) => start)
        .sort((x, y) => x - y),
    ).toEqual([2 * CHUNK, 6 * CHUNK]);
  });

  describe('the chunk list', () => {
    it('is refused as CHUNK_LIST_UNAVAILABLE (retryable) when the origin serves other bytes, before any mirror is asked', async () => {
      const [m] = await mirrors({});
      const model = chunkedModel('wrong-list', bytes, CHUNK, [m!.url('/model.bin')], origin);
      origin.serve(chunkListPath(model.chunks.sha256), chunkListOf(generatedBytes(bytes.length, 72), CHUNK).bytes);
      const error = await failure(fetchChunked(model, ports()));
      expect(error.code).toBe('CHUNK_LIST_UNAVAILABLE');
      expect(error.retryable).toBe(true);
      expect(m!.requests).toEqual([]);
      expect(await staged()).toEqual([]);
    });

    it('is refused as CHUNK_LIST_UNAVAILABLE when the origin does not have it', async () => {
      const [m] = await mirrors({});
      const model = { ...chunkedModel('no-list', bytes, CHUNK, [m!.url('/model.bin')], origin), chunks: { size: CHUNK, sha256: 'e'.repeat(64) } };
      const error = await failure(fetchChunked(model, ports()));
      expect(error.code).toBe('CHUNK_LIST_UNAVAILABLE');
      expect(error.mirrors?.[0]?.code).toBe('MIRROR_HTTP_STATUS');
    });

    it('is refused as CHUNK_LIST_INVALID (not retryable) when the signed list has the wrong number of chunks', async () => {
      const [m] = await mirrors({});
      // A list made for 2 MiB chunks, signed into a model that says 1 MiB: the snapshot is wrong.
      const list = chunkListOf(bytes, 2 * CHUNK);
      origin.serve(chunkListPath(list.sha256), list.bytes);
      const model = { ...chunkedModel('short-list', bytes, CHUNK, [m!.url('/model.bin')], origin), chunks: { size: CHUNK, sha256: list.sha256 } };
      const error = await failure(fetchChunked(model, ports()));
      expect(error.code).toBe('CHUNK_LIST_INVALID');
      expect(error.retryable).toBe(false);
      expect(m!.requests).toEqual([]);
    });

    it('is refused as CHUNK_LIST_INVALID when its chunks all verify but the file is not the signed sha256', async () => {
      const [m] = await mirrors({});
      const model = { ...chunkedModel('inconsistent', bytes, CHUNK, [m!.url('/model.bin')], origin), sha256: sha256(generatedBytes(10, 1)) };
      const error = await failure(fetchChunked(model, ports()));
      expect(error.code).toBe('CHUNK_LIST_INVALID');
      expect(error.message).toContain(sha256(bytes));
      expect(await staged()).toEqual([]);
      expect(existsSync(join(dir.path, 'store', 'sha256', model.sha256))).toBe(false);
    });
  });

  it('is cancelled by the signal with ABORTED and keeps what was verified', async () => {
    const [slow] = await mirrors({ bytesPerTick: 256 * 1024 });
    const model = chunkedModel('cancelled', bytes, CHUNK, [slow!.url('/model.bin')], origin);
    const controller = new AbortController();
    const error = await failure(
      fetchChunked(model, ports({ connections: 1 }), {
        signal: controller.signal,
        onProgress: (done) => {
          if (done >= 2 * CHUNK) controller.abort();
        },
      }),
    );
    expect(error.code).toBe('ABORTED');
    expect((await staged()).sort()).toEqual([`${model.sha256}.chunked`, `${model.sha256}.chunks`, `${model.sha256}.list`]);
    const report = await fetchChunked(model, ports());
    expect(report.chunksResumed).toBeGreaterThanOrEqual(1);
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
  });
});

describe('fetchModel with chunks', () => {
  it('takes the chunked path when chunk ports are given, and the single stream when they are not', async () => {
    const [m] = await mirrors({});
    const model = chunkedModel('both', bytes, CHUNK, [m!.url('/model.bin')], origin);
    const { chunks: _chunks, ...streamPorts } = ports();
    await fetchModel(model, streamPorts);
    expect(m!.requests.map((r) => r.range)).toEqual([undefined]);
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));

    const again = await tempDir('resultity-applier-chunked-');
    try {
      const store = new FsModelStore(again.path);
      const downloader = new HttpDownloader({ allowPrivateAddresses: true });
      await fetchModel(model, { models: store, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, store) });
      expect(m!.ranges()).toHaveLength(COUNT);
      expect(sha256(await readFile(join(again.path, 'sha256', model.sha256)))).toBe(sha256(bytes));
    } finally {
      await again.cleanup();
    }
  });

  it('falls back to one verified stream when no mirror serves chunks that match the chunk list', async () => {
    const [a, b] = await mirrors({}, {});
    // A list of other bytes, signed into the model: every chunk of every mirror is refuted by it.
    const list = chunkListOf(generatedBytes(bytes.length, 73), CHUNK);
    origin.serve(chunkListPath(list.sha256), list.bytes);
    const model = {
      ...chunkedModel('wrong-chunks', bytes, CHUNK, [a!.url('/model.bin'), b!.url('/model.bin')], origin),
      chunks: { size: CHUNK, sha256: list.sha256 },
    };
    const report = await fetchModel(model, ports());
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(report.fallback).toMatchObject({ index: -1, code: 'CHUNK_LIST_INVALID' });
    // The stream is one request without a range, to the first mirror.
    expect(a!.requests.at(-1)?.range).toBeUndefined();
    expect(await staged()).toEqual([]);
  });

  it('does not fall back when the mirrors themselves fail: the stream would meet them too', async () => {
    const [a] = await mirrors({ status: 503 });
    const model = chunkedModel('down', bytes, CHUNK, [a!.url('/model.bin')], origin);
    const error = await failure(fetchModel(model, ports(), { maxAttemptsPerUrl: 2, retryDelayMs: 10 }));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(a!.requests.every((r) => r.range !== undefined)).toBe(true);
  });

  it('refuses with INSUFFICIENT_SPACE before anything is fetched when the reserve leaves too little room', async () => {
    const [m] = await mirrors({});
    const model = chunkedModel('too-big', bytes, CHUNK, [m!.url('/model.bin')], origin);
    const store = new FsModelStore(join(dir.path, 'store'), { reserveBytes: Number.MAX_SAFE_INTEGER });
    const error = await failure(fetchModel(model, ports({ store })));
    expect(error.code).toBe('INSUFFICIENT_SPACE');
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(new RegExp(`needs ${bytes.length} more bytes in .*, 0 are free`));
    expect(m!.requests).toEqual([]);
    expect(await staged()).toEqual([]);
  });
});

describe('after kill -9', () => {
  it('resumes from the journal: journalled chunks are never fetched again, the torn ones are', async () => {
    const big = generatedBytes(16 * MiB, 73);
    const [slow] = await mirrors({ bytesPerTick: 64 * 1024 });
    slow!.serve('/big.bin', big);
    const model = chunkedModel('killed', big, CHUNK, [slow!.url('/big.bin')], origin);
    const root = join(dir.path, 'store');
    const connections = 3;
    // node itself with tsx as a loader (not the tsx wrapper, which would leave its node child alive after a SIGKILL).
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('./support/chunked-child.ts', import.meta.url)),
        JSON.stringify({ model, root, origin: origin.url(''), connections }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], cwd: fileURLToPath(new URL('..', import.meta.url)) },
    );
    let lastDone = 0;
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    child.stdout.on('data', (data: Buffer) => {
      for (const line of data.toString().split('\n')) {
        const done = Number(line);
        if (line !== '' && Number.isFinite(done)) lastDone = done;
      }
      if (lastDone >= big.length / 2) child.kill('SIGKILL');
    });
    expect(await exited).toBe('SIGKILL');
    expect(existsSync(join(root, 'sha256', model.sha256))).toBe(false);

    // What the journal holds is what survived the kill.
    const journal = await readFile(join(root, 'staging', `${model.sha256}.chunks`));
    const bitmap = journal.subarray(56);
    const survived = Array.from({ length: 16 }, (_, i) => i).filter((i) => (bitmap[i >> 3]! >> (i & 7)) & 1);
    expect(survived.length).toBeGreaterThan(0);
    // At most the chunks in flight (and those waiting for their flush) are lost.
    expect(lastDone - survived.length * CHUNK).toBeLessThanOrEqual(2 * connections * CHUNK);

    const before = slow!.ranges().length;
    slow!.faults = {};
    const report = await fetchChunked(model, ports({ connections }));
    expect(report.chunksResumed).toBe(survived.length);
    const refetched = slow!
      .ranges()
      .slice(before)
      .map(([start]) => start / CHUNK);
    expect(refetched.filter((i) => survived.includes(i))).toEqual([]);
    expect(refetched.length).toBe(16 - survived.length);
    expect(report.bytesFetched).toBe((16 - survived.length) * CHUNK);
    expect(sha256(await readFile(join(root, 'sha256', model.sha256)))).toBe(sha256(big));
    expect(await staged()).toEqual([]);
  });
});

describe('execute with chunked models', () => {
  const policy = { allowedRegistries: [] };

  function applierPorts(store: FsModelStore) {
    const { models, downloader, clock, chunks } = ports({ store, connections: 2 });
    // No step here uses the engine: it is never called.
    return { engine: new DockerEngine(), models, downloader, clock, chunks, flags: new FileFlagsStore(join(dir.path, 'flags.json')) };
  }

  it('reports per-mirror progress through onProgress and installs the model', async () => {
    const [a, b] = await mirrors({}, {});
    const model = chunkedModel('progress', bytes, CHUNK, [a!.url('/model.bin'), b!.url('/model.bin')], origin);
    const events: ProgressEvent[] = [];
    await execute([{ kind: 'fetch-model', model }], applierPorts(new FsModelStore(join(dir.path, 'store'))), { policy, onProgress: (e) => events.push(e) });
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    const last = events.at(-1)!;
    expect(last).toMatchObject({ kind: 'model', name: 'progress@1.0.0', bytesDone: bytes.length, bytesTotal: bytes.length });
    expect(last.bytesPerSecond).toBeGreaterThan(0);
    expect(last.mirrors?.map((m) => m.index)).toEqual([0, 1]);
    expect(last.mirrors?.reduce((n, m) => n + m.bytes, 0)).toBe(bytes.length);
  });

  it('names in its report a mirror dropped from a download that the others completed', async () => {
    const [good, bad] = await mirrors({}, { corruptAt: [0, CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK, 5 * CHUNK, 6 * CHUNK] });
    const model = chunkedModel('dropped', bytes, CHUNK, [good!.url('/model.bin'), bad!.url('/model.bin')], origin);
    const report = await execute([{ kind: 'fetch-model', model }], applierPorts(new FsModelStore(join(dir.path, 'store'))), { policy });
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
    expect(report.droppedMirrors).toEqual([{ model: 'dropped@1.0.0', mirrors: [expect.objectContaining({ index: 1, code: 'MIRROR_CHUNK_MISMATCH' })] }]);
  });

  it('counts what a resumed chunked download already holds, so a nearly full disk does not refuse it', async () => {
    // 10 MiB of tmpfs (needs root, like models.test.ts's full disk): an 8 MiB model fits once.
    const mounted = join('/tmp', `resultity-applier-chunked-tmpfs-${process.pid}`);
    await mkdir(mounted, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=10m', 'tmpfs', mounted]);
    try {
      const eight = generatedBytes(8 * MiB, 76);
      const [m] = await mirrors({ stallAt: [6 * CHUNK] });
      m!.serve('/eight.bin', eight);
      const model = chunkedModel('eight', eight, CHUNK, [m!.url('/eight.bin')], origin);
      const store = new FsModelStore(mounted);
      const first = await failure(fetchChunked(model, ports({ store, connections: 1, idleTimeoutMs: 300 }), { maxAttemptsPerUrl: 1 }));
      expect(first.code).toBe('DOWNLOAD_FAILED');
      // 6 MiB are staged; the 4 MiB or so left free are less than the model, more than what it lacks.
      expect(await store.freeBytes()).toBeLessThan(eight.length);
      m!.faults = {};
      await execute(
        [{ kind: 'fetch-model', model }],
        { ...applierPorts(store), chunks: chunkPorts(origin, new HttpDownloader({ allowPrivateAddresses: true }), store) },
        { policy },
      );
      expect(sha256(await readFile(join(mounted, 'sha256', model.sha256)))).toBe(sha256(eight));
    } finally {
      execFileSync('umount', [mounted]);
      await rmdir(mounted);
    }
  });

  it('refuses with INSUFFICIENT_SPACE naming what every missing model needs, before any download and without spending the retry budget', async () => {
    const [a] = await mirrors({});
    const first = chunkedModel('first', bytes, CHUNK, [a!.url('/model.bin')], origin);
    const second = chunkedModel('second', generatedBytes(3 * MiB, 74), CHUNK, [a!.url('/second.bin')], origin);
    const store = new FsModelStore(join(dir.path, 'store'), { reserveBytes: Number.MAX_SAFE_INTEGER });
    const error = await failure(
      execute(
        [
          { kind: 'fetch-model', model: first },
          { kind: 'fetch-model', model: second },
        ],
        applierPorts(store),
        { policy },
      ),
    );
    expect(error.code).toBe('INSUFFICIENT_SPACE');
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(new RegExp(`models need ${bytes.length + 3 * MiB} more bytes in .*, 0 are free`));
    expect(a!.requests).toEqual([]);
    expect(await staged()).toEqual([]);
  });
});

describe('a slow disk', () => {
  it('is not blamed on the mirror: reading waits for the writes without the idle timer or the minimum rate running', async () => {
    const [m] = await mirrors({});
    // 4 MiB chunks: more batches than a connection holds, so reading has to wait for the disk.
    const model = chunkedModel('slow-disk', bytes, 4 * CHUNK, [m!.url('/model.bin')], origin);
    const store = new FsModelStore(join(dir.path, 'store'));
    // The real store, each write held 250 ms: longer than the mirror may stay silent (150 ms).
    const staging = {
      openChunked: async (sha: string, layout: Parameters<FsModelStore['openChunked']>[1]) => {
        const part = await store.openChunked(sha, layout);
        return {
          ...part,
          path: part.path,
          done: part.done,
          write: async (at: number, data: Uint8Array[]) => {
            await new Promise((r) => setTimeout(r, 250));
            await part.write(at, data);
          },
        };
      },
      discardChunked: (sha: string) => store.discardChunked(sha),
      chunkedBytes: (sha: string) => store.chunkedBytes(sha),
      commitChunked: (sha: string) => store.commitChunked(sha),
      keepChunkList: (sha: string, list: Uint8Array) => store.keepChunkList(sha, list),
      keptChunkList: (sha: string, maxBytes: number) => store.keptChunkList(sha, maxBytes),
    } satisfies ChunkStaging;
    const downloader = new HttpDownloader({ allowPrivateAddresses: true, idleTimeoutMs: 150, minBytesPerSecond: 8 * MiB, rateWindowMs: 100 });
    const report = await fetchChunked(model, { models: store, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, staging, 2) });
    expect(report.mirrors[0]!.failure).toBeNull();
    expect(sha256(await blob(model.sha256))).toBe(sha256(bytes));
  });
});

describe('a bandwidth limit', () => {
  it('holds every connection back without the mirrors being blamed for the time it held them', async () => {
    const small = generatedBytes(3 * MiB, 75);
    const [a, b] = await mirrors({}, {});
    a!.serve('/small.bin', small);
    b!.serve('/small.bin', small);
    const model = chunkedModel('limited', small, CHUNK, [a!.url('/small.bin'), b!.url('/small.bin')], origin);
    // 2 MiB/s shared by 4 connections is about 512 KiB/s each, half the 1 MiB/s each mirror
    // must keep: only a rate check that discounts our own throttling lets this download finish.
    const downloader = new HttpDownloader({ allowPrivateAddresses: true, maxBytesPerSecond: 2 * MiB, minBytesPerSecond: MiB, rateWindowMs: 500 });
    const models = new FsModelStore(join(dir.path, 'store'));
    const report = await fetchChunked(model, { models, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, models, 4) });
    expect(report.mirrors.map((m) => m.failure)).toEqual([null, null]);
    expect(sha256(await blob(model.sha256))).toBe(sha256(small));
  });
});

describe('over https', () => {
  /** Runs the TLS child with the test certificate trusted or not; its one line of JSON. */
  async function tlsChild(host: string, trusted: boolean): Promise<{ read?: number; same?: boolean; error?: string }> {
    const applier = fileURLToPath(new URL('..', import.meta.url));
    const key = join(dir.path, 'key.pem');
    const cert = join(dir.path, 'cert.pem');
    if (!existsSync(cert)) {
      await new Promise<void>((resolve, reject) =>
        execFile(
          'openssl',
          [
            'req',
            '-x509',
            '-newkey',
            'rsa:2048',
            '-nodes',
            '-keyout',
            key,
            '-out',
            cert,
            '-days',
            '1',
            '-subj',
            '/CN=localhost',
            '-addext',
            'subjectAltName=IP:127.0.0.1,DNS:localhost',
          ],
          (error) => (error ? reject(error) : resolve()),
        ),
      );
    }
    const env = { ...process.env, ...(trusted ? { NODE_EXTRA_CA_CERTS: cert } : {}) };
    if (!trusted) delete env.NODE_EXTRA_CA_CERTS;
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--import', 'tsx', fileURLToPath(new URL('./support/https-child.ts', import.meta.url)), key, cert, host],
        { cwd: applier, env },
        (error, out) => (error ? reject(error) : resolve(out)),
      ),
    );
    return JSON.parse(stdout.trim()) as { read?: number; same?: boolean; error?: string };
  }

  it('reads a range through TLS (by name with SNI, and by address) with the certificate checked', async () => {
    expect(await tlsChild('localhost', true)).toEqual({ read: 2 * MiB + 7 - 100, same: true });
    expect(await tlsChild('127.0.0.1', true)).toEqual({ read: 2 * MiB + 7 - 100, same: true });
  });

  it('refuses a mirror whose certificate is not trusted', async () => {
    const outcome = await tlsChild('localhost', false);
    expect(outcome.error).toMatch(/CERT|SELF_SIGNED|UNABLE_TO_VERIFY/);
  });
});
