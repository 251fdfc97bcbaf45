import { createReadStream, readdirSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';

import { readRegularFileSync, writeFileAtomic } from '@resultity/node-kit';

import type { CollectableStore, StoreFile, StoreInventory } from './collect.js';
import { fail, messageOf } from './errors.js';
import type { ChunkLayout, ChunkStaging, ChunkedPart, ModelIndexEntry, ModelStore, PartWriter } from './ports.js';

const HEX64 = /^[0-9a-f]{64}$/;
/** The most a small file of the store (the model index, the flags, a kept chunk list) may hold. */
const SMALL_FILE_BYTES = 16 << 20;

/**
 * A small file of the store as text, or null when absent: bounded, never blocking on what sits
 * under its name (node-kit's `readRegularFileSync`); what cannot be read is STORE_FAILED.
 */
export function readSmallFile(path: string): string | null {
  let bytes: Uint8Array | null;
  try {
    bytes = readRegularFileSync(path, SMALL_FILE_BYTES);
  } catch (cause) {
    fail('STORE_FAILED', messageOf(cause), cause);
  }
  return bytes === null ? null : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}
/** Staged files collection knows: only these names are ever removed from staging. */
const STAGED = /^([0-9a-f]{64})\.(part|chunked|chunks|list)$/;
const STAGED_KINDS = { part: 'part', chunked: 'chunked', chunks: 'journal', list: 'list' } as const;

/** Refuses anything but 64 lowercase hex digits, so a store path can never escape the store. */
export function assertSha256(sha256: string): string {
  if (typeof sha256 !== 'string' || !HEX64.test(sha256)) {
    fail('INVALID_STEP', `expected a model sha256 of 64 lowercase hex digits, found ${JSON.stringify(String(sha256).slice(0, 80))}`);
  }
  return sha256;
}

function isEntry(value: unknown): value is ModelIndexEntry {
  const v = value as ModelIndexEntry;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.name === 'string' &&
    typeof v.version === 'string' &&
    typeof v.sha256 === 'string' &&
    HEX64.test(v.sha256) &&
    Number.isSafeInteger(v.size)
  );
}

/**
 * The default ModelStore on a file system: `<root>/sha256/<hex>` blobs, `<root>/index.json`
 * (name@version → sha256), `<root>/staging/<hex>.part` for downloads in flight. Names never
 * become paths: only validated hex digests do.
 */
export class FsModelStore implements ModelStore, ChunkStaging, CollectableStore {
  readonly root: string;
  private readonly blobs: string;
  private readonly staging: string;
  private readonly indexFile: string;

  private readonly fsync: boolean;
  private readonly reserveBytes: number;

  /**
   * `fsync: false` skips flushing a download to disk before it is renamed into the store: faster
   * (a download then runs at page-cache speed) but a power cut can leave a torn blob behind a
   * valid name. Only for benchmarks and throwaway stores.
   *
   * `reserveBytes` (default 0) is kept free for everything else on the disk: `freeBytes()`
   * reports the free space minus it, so a download that would eat into it is refused up front.
   */
  constructor(root: string, options: { fsync?: boolean; reserveBytes?: number } = {}) {
    this.root = root;
    this.fsync = options.fsync ?? true;
    this.reserveBytes = options.reserveBytes ?? 0;
    this.blobs = join(root, 'sha256');
    this.staging = join(root, 'staging');
    this.indexFile = join(root, 'index.json');
  }

  private async ready(): Promise<void> {
    await mkdir(this.blobs, { recursive: true });
    await mkdir(this.staging, { recursive: true });
  }

  /**
   * The index, the blob listing and the inventory are read synchronously: every apply reads
   * them (planning from reality, collecting after), they are small page-cache reads, and the
   * asynchronous calls cost several times their CPU in promises and thread hand-offs. Opened
   * non-blocking: a FIFO under the index's name reads as empty (refused as not JSON) instead of
   * holding the Agent's one thread.
   */
  async readIndex(): Promise<ModelIndexEntry[]> {
    const text = readSmallFile(this.indexFile);
    if (text === null) return [];
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (cause) {
      fail('STORE_FAILED', `model index ${this.indexFile} is not JSON`, cause);
    }
    const entries = (value as { models?: unknown })?.models;
    if (!Array.isArray(entries) || !entries.every(isEntry)) {
      fail('STORE_FAILED', `model index ${this.indexFile} does not hold a list of {name, version, sha256, size}`);
    }
    return entries.map((e) => ({ name: e.name, version: e.version, sha256: e.sha256, size: e.size }));
  }

  async writeIndex(entries: ModelIndexEntry[]): Promise<void> {
    await this.ready();
    const sorted = [...entries].sort((a, b) => `${a.name}@${a.version}`.localeCompare(`${b.name}@${b.version}`));
    await writeFileAtomic(this.indexFile, `${JSON.stringify({ models: sorted }, null, 2)}\n`);
  }

  async listBlobs(): Promise<string[]> {
    try {
      return readdirSync(this.blobs)
        .filter((n) => HEX64.test(n))
        .sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }

  async hasBlob(sha256: string): Promise<boolean> {
    try {
      return (await stat(this.blobPath(sha256))).isFile();
    } catch {
      return false;
    }
  }

  blobPath(sha256: string): string {
    return join(this.blobs, assertSha256(sha256));
  }

  private partPath(sha256: string): string {
    return join(this.staging, `${assertSha256(sha256)}.part`);
  }

  async partSize(sha256: string): Promise<number> {
    try {
      return (await stat(this.partPath(sha256))).size;
    } catch {
      return 0;
    }
  }

  async openPart(sha256: string, append: boolean): Promise<PartWriter> {
    await this.ready();
    const handle = await open(this.partPath(sha256), append ? 'a' : 'w', 0o644);
    return {
      write: async (chunks) => {
        await handle.writev(chunks);
      },
      close: () => handle.close(),
    };
  }

  readPart(sha256: string): AsyncIterable<Uint8Array> {
    return createReadStream(this.partPath(sha256), { highWaterMark: 1 << 20 });
  }

  async discardPart(sha256: string): Promise<void> {
    await rm(this.partPath(sha256), { force: true });
  }

  async commitPart(sha256: string): Promise<void> {
    await this.ready();
    const part = this.partPath(sha256);
    if (this.fsync) {
      const handle = await open(part, 'r');
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
    await rename(part, this.blobPath(sha256));
  }

  async removeBlob(sha256: string): Promise<void> {
    await rm(this.blobPath(sha256), { force: true });
  }

  async freeBytes(): Promise<number> {
    await this.ready();
    const s = await statfs(this.root);
    return Math.max(0, s.bavail * s.bsize - this.reserveBytes);
  }

  private chunkedPath(sha256: string): string {
    return join(this.staging, `${assertSha256(sha256)}.chunked`);
  }

  private journalPath(sha256: string): string {
    return join(this.staging, `${assertSha256(sha256)}.chunks`);
  }

  private listPath(sha256: string): string {
    return join(this.staging, `${assertSha256(sha256)}.list`);
  }

  async keepChunkList(sha256: string, list: Uint8Array): Promise<void> {
    await this.ready();
    await writeFileAtomic(this.listPath(sha256), list);
  }

  async keptChunkList(sha256: string, maxBytes: number): Promise<Uint8Array | null> {
    try {
      return readRegularFileSync(this.listPath(sha256), maxBytes);
    } catch {
      // Not a file of at most maxBytes: as if none were kept (the origin's copy is fetched).
      return null;
    }
  }

  async openChunked(sha256: string, layout: ChunkLayout): Promise<ChunkedPart> {
    await this.ready();
    const dataPath = this.chunkedPath(sha256);
    const journalPath = this.journalPath(sha256);
    const count = Math.ceil(layout.size / layout.chunkSize);
    const header = journalHeader(layout);
    const bitmap = new Uint8Array(Math.ceil(count / 8));
    const done = new Set<number>();
    let resumed = false;
    try {
      const [journal, data] = await Promise.all([readFile(journalPath), stat(dataPath)]);
      // Trusted only when it describes this very layout and the staged file has the full size.
      if (journal.length === header.length + bitmap.length && Buffer.compare(journal.subarray(0, header.length), header) === 0 && data.size === layout.size) {
        bitmap.set(journal.subarray(header.length));
        for (let i = 0; i < count; i++) if ((bitmap[i >> 3]! >> (i & 7)) & 1) done.add(i);
        resumed = true;
      }
    } catch {
      // No journal or no staged file: a fresh start.
    }
    const data = await open(dataPath, resumed ? 'r+' : 'w+', 0o644);
    let journal: Awaited<ReturnType<typeof open>>;
    try {
      if (!resumed) {
        // Sparse preallocation: every chunk has its place, so chunks are written where they belong in any order.
        await data.truncate(layout.size);
        const fresh = await open(journalPath, 'w', 0o644);
        try {
          await fresh.write(Buffer.concat([header, bitmap]), 0, header.length + bitmap.length, 0);
          if (this.fsync) await fresh.sync();
        } finally {
          await fresh.close();
        }
      }
      journal = await open(journalPath, 'r+');
    } catch (error) {
      await data.close();
      throw error;
    }
    const fsync = this.fsync;
    // Journal writes one after another: bits only ever go from 0 to 1 (or back by unmark, never
    // racing a mark), so a torn write of the bitmap can only lose chunks, never invent one.
    let chain: Promise<void> = Promise.resolve();
    const record = (apply: () => void, flushData: boolean): Promise<void> => {
      const next = chain.then(async () => {
        if (flushData && fsync) await data.datasync();
        apply();
        await journal.write(bitmap, 0, bitmap.length, header.length);
        if (fsync) await journal.datasync();
      });
      chain = next.catch(() => undefined);
      return next;
    };
    const writeAt = async (position: number, chunks: Uint8Array[]) => {
      const expected = chunks.reduce((n, c) => n + c.byteLength, 0);
      const { bytesWritten } = await data.writev(chunks, position);
      // A short write to a regular file means the disk is full; say so the way a write would.
      if (bytesWritten !== expected) throw Object.assign(new Error(`short write: ${bytesWritten} of ${expected} bytes`), { code: 'ENOSPC' });
    };
    // Positional writes one at a time, whichever connection they come from. Writes to one file
    // hold its inode lock, and concurrent writers from the I/O thread pool spin on it instead of
    // sleeping (measured on ext4 with a flush running: ~1.8 CPU-s per GiB of spinning); one after
    // another they cost only the copy into the page cache.
    let writing: Promise<void> = Promise.resolve();
    return {
      path: dataPath,
      done,
      write: (position, chunks) => {
        const next = writing.then(() => writeAt(position, chunks));
        writing = next.catch(() => undefined);
        return next;
      },
      markDone: (indices) =>
        record(() => {
          for (const i of indices) bitmap[i >> 3]! |= 1 << (i & 7);
        }, true),
      flush: () => {
        const next = chain.then(async () => {
          if (fsync) await data.datasync();
        });
        chain = next.catch(() => undefined);
        return next;
      },
      unmark: (indices) =>
        record(() => {
          for (const i of indices) bitmap[i >> 3]! &= ~(1 << (i & 7));
        }, false),
      close: async () => {
        await writing;
        await chain;
        await Promise.allSettled([data.close(), journal.close()]);
      },
    };
  }

  async chunkedBytes(sha256: string): Promise<number> {
    try {
      // Allocated blocks, not the apparent size: the file is created at its full size, sparse.
      return (await stat(this.chunkedPath(sha256))).blocks * 512;
    } catch {
      return 0;
    }
  }

  async discardChunked(sha256: string): Promise<void> {
    await rm(this.listPath(sha256), { force: true });
    await rm(this.journalPath(sha256), { force: true });
    await rm(this.chunkedPath(sha256), { force: true });
  }

  async inventory(): Promise<StoreInventory> {
    const files: StoreFile[] = [];
    const add = async (kind: StoreFile['kind'], sha256: string, path: string) => {
      try {
        const s = statSync(path);
        // Allocated blocks: what removing the file gives back (a staged chunked file is sparse).
        if (s.isFile()) files.push({ kind, sha256, bytes: s.blocks * 512 });
      } catch {
        // Gone between the listing and the stat: nothing to collect.
      }
    };
    for (const hex of await this.listBlobs()) await add('blob', hex, join(this.blobs, hex));
    let staged: string[] = [];
    try {
      staged = readdirSync(this.staging);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    for (const name of staged.sort()) {
      const match = STAGED.exec(name);
      if (match === null) continue;
      const kind = STAGED_KINDS[match[2] as keyof typeof STAGED_KINDS];
      await add(kind, match[1]!, join(this.staging, name));
    }
    return { index: await this.readIndex(), files };
  }

  async removeFile(file: Pick<StoreFile, 'kind' | 'sha256'>): Promise<void> {
    const path =
      file.kind === 'blob'
        ? this.blobPath(file.sha256)
        : file.kind === 'part'
          ? this.partPath(file.sha256)
          : file.kind === 'chunked'
            ? this.chunkedPath(file.sha256)
            : file.kind === 'list'
              ? this.listPath(file.sha256)
              : this.journalPath(file.sha256);
    await rm(path, { force: true });
  }

  async commitChunked(sha256: string): Promise<void> {
    await this.ready();
    // The data was flushed before the last chunk was journalled; the rename makes it the blob.
    await rename(this.chunkedPath(sha256), this.blobPath(sha256));
    await rm(this.journalPath(sha256), { force: true });
    await rm(this.listPath(sha256), { force: true });
  }
}

/** The journal's first bytes: a magic and the layout, so a journal of another list or size is ignored. */
function journalHeader(layout: ChunkLayout): Buffer {
  const header = Buffer.alloc(8 + 32 + 8 + 8);
  header.write('RSCHUNK1', 0, 'latin1');
  Buffer.from(assertSha256(layout.listSha256), 'hex').copy(header, 8);
  header.writeBigUInt64BE(BigInt(layout.size), 40);
  header.writeBigUInt64BE(BigInt(layout.chunkSize), 48);
  return header;
}
