import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';

import { writeFileAtomic } from '@resultity/node-kit';

import { fail } from './errors.js';
import type { ModelIndexEntry, ModelStore, PartWriter } from './ports.js';

const HEX64 = /^[0-9a-f]{64}$/;

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
export class FsModelStore implements ModelStore {
  readonly root: string;
  private readonly blobs: string;
  private readonly staging: string;
  private readonly indexFile: string;

  private readonly fsync: boolean;

  /**
   * `fsync: false` skips flushing a download to disk before it is renamed into the store: faster
   * (a download then runs at page-cache speed) but a power cut can leave a torn blob behind a
   * valid name. Only for benchmarks and throwaway stores.
   */
  constructor(root: string, options: { fsync?: boolean } = {}) {
    this.root = root;
    this.fsync = options.fsync ?? true;
    this.blobs = join(root, 'sha256');
    this.staging = join(root, 'staging');
    this.indexFile = join(root, 'index.json');
  }

  private async ready(): Promise<void> {
    await mkdir(this.blobs, { recursive: true });
    await mkdir(this.staging, { recursive: true });
  }

  async readIndex(): Promise<ModelIndexEntry[]> {
    let text: string;
    try {
      text = await readFile(this.indexFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
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
      return (await readdir(this.blobs)).filter((n) => HEX64.test(n)).sort();
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
    return s.bavail * s.bsize;
  }
}
