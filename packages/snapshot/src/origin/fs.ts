import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * Replaces a file so that a reader, or a restart after a crash, sees the old content or the
 * new, never a mix: temp file, fsync, rename over, fsync of the directory. `mtime`, when
 * given, is the modification time the new file appears with.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o644, mtime?: Date): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temp = join(dir, `.${randomBytes(6).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', mode);
  try {
    await file.writeFile(data);
    // Set before the rename, so the file appears with its final modification time at once.
    if (mtime !== undefined) await file.utimes(mtime, mtime);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await fsyncDirectory(dir);
}

export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
