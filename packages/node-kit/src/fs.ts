import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsync as fsyncCallback, futimesSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { CodedError } from './errors.js';

/** The name writeFileAtomic gives its temp file; nothing else in a directory it writes looks like this. */
export const ATOMIC_TEMP_PATTERN = /^\.[0-9a-f]{12}\.tmp$/;

/**
 * Replaces a file so that a reader, or a restart after a crash, sees the old content or the
 * new, never a mix: temp file, fsync, rename over, fsync of the directory. `mtime`, when
 * given, is the modification time the new file appears with. The directory is created only
 * when it is missing.
 *
 * Only the two fsyncs are asynchronous: they wait for the device, and the event loop must not.
 * The rest (open, write, close, rename) are page-cache operations on small files, done
 * synchronously: the Agent writes its state several times per apply, and each asynchronous
 * call costs more CPU in promises and thread hand-offs than the operation itself (an atomic
 * write of a few kilobytes: about 230 µs of CPU all asynchronous, 90 µs like this).
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o644, mtime?: Date): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${randomBytes(6).toString('hex')}.tmp`); // ATOMIC_TEMP_PATTERN
  let fd: number;
  try {
    fd = openSync(temp, 'wx', mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    mkdirSync(dir, { recursive: true });
    fd = openSync(temp, 'wx', mode);
  }
  try {
    // One write call for the whole buffer in the common case; a short write (a full disk) loops or throws.
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let done = 0; done < bytes.byteLength; ) {
      const bytesWritten = writeSync(fd, bytes, done, bytes.byteLength - done, done);
      if (bytesWritten === 0) refuse('IO', `${temp}: the write made no progress`);
      done += bytesWritten;
    }
    // Set before the rename, so the file appears with its final modification time at once.
    if (mtime !== undefined) futimesSync(fd, mtime, mtime);
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  await fsyncDirectory(dir);
}

/** Makes a rename or unlink in `dir` durable: without it a crash can forget the entry. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const fd = openSync(dir, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsync(2) on the thread pool: the one call of an atomic write that waits for the device. */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsyncCallback(fd, (error) => (error ? reject(error) : resolve())));
}

/** Why `readFileBounded` failed: the file is over the limit, or it could not be read. */
export type FileErrorCode = 'IO' | 'TOO_LARGE';

/** A file read that failed; the codes match the snapshot package's, which rethrows them as its own. */
export class FileError extends CodedError<FileErrorCode> {
  override readonly name = 'FileError';
}

function refuse(code: FileErrorCode, message: string, cause?: unknown): never {
  throw new FileError(code, message, cause === undefined ? undefined : { cause });
}

/**
 * Reads at most `maxBytes` (+1 to detect excess) so an oversize file is refused as TOO_LARGE
 * without ever being held in memory whole.
 */
export async function readFileBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  }
  try {
    // Chunks, not one buffer of the limit: a small file costs little whatever the limit is.
    const chunks: Buffer[] = [];
    let filled = 0;
    while (filled <= maxBytes) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1 - filled));
      const { bytesRead } = await handle.read(chunk, 0, chunk.byteLength, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      filled += bytesRead;
    }
    if (filled > maxBytes) refuse('TOO_LARGE', `${path} is larger than the limit of ${maxBytes} bytes`);
    const bytes = Buffer.concat(chunks, filled);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } catch (cause) {
    if (cause instanceof FileError) throw cause;
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  } finally {
    await handle.close();
  }
}

/**
 * Reads a small file a process keeps for itself (state, an index, flags), at most `maxBytes`,
 * with synchronous calls: such files are read several times per operation from the page cache,
 * where each asynchronous call costs more CPU in promises and thread hand-offs than the read.
 * Opened non-blocking and checked to be a regular file before any read, so whatever sits
 * under the name (a FIFO, a device) cannot hold the process's one thread: that is `IO`, and
 * more than `maxBytes`, even grown while being read, is `TOO_LARGE`. Null when the file does
 * not exist.
 */
export function readRegularFileSync(path: string, maxBytes: number): Uint8Array | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) refuse('IO', `${path} is not a regular file`);
    if (info.size > maxBytes) refuse('TOO_LARGE', `${path} is ${info.size} bytes, more than the limit of ${maxBytes}`);
    const buffer = Buffer.alloc(info.size + 1);
    let filled = 0;
    for (;;) {
      const bytesRead = readSync(fd, buffer, filled, buffer.byteLength - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled > maxBytes) refuse('TOO_LARGE', `${path} grew past the limit of ${maxBytes} bytes while being read`);
      if (filled === buffer.byteLength) break;
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, filled);
  } catch (cause) {
    if (cause instanceof FileError) throw cause;
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  } finally {
    closeSync(fd);
  }
}

/** A short, stable phrase for a file system error, for messages a person reads. */
export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'EEXIST':
      return 'already exists';
    default:
      return code ?? (error as Error)?.message ?? String(error);
  }
}

/**
 * Removes the temp files of writes a killed process never finished (writeFileAtomic's, by
 * name), in `dir` and its subdirectories down to `depth`. A kill -9 between open and rename
 * leaves one behind, and nothing else would ever remove it. Only the directory's single
 * writer may call this (the Agent holds its lock), or another writer's temp file in flight
 * would go. Returns what was removed.
 */
export async function removeStaleTempFiles(dir: string, depth = 2): Promise<string[]> {
  const removed: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isFile() && ATOMIC_TEMP_PATTERN.test(entry.name)) {
      await rm(path, { force: true });
      removed.push(path);
    } else if (entry.isDirectory() && depth > 0) {
      removed.push(...(await removeStaleTempFiles(path, depth - 1)));
    }
  }
  if (removed.some((p) => dirname(p) === dir)) await fsyncDirectory(dir);
  return removed;
}
