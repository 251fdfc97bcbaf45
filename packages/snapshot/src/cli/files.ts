import { open, readFile } from 'node:fs/promises';

import { fromKeyFile, isSigningKey, type PublicKey, type SigningKey } from '../ed25519.js';
import { SnapshotError, refuse } from '../errors.js';

/**
 * Reads at most `maxBytes` (+1 to detect excess) so an oversize file is refused as TOO_LARGE
 * without ever being held in memory whole.
 */
export async function readBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  }
  try {
    const buffer = Buffer.alloc(maxBytes + 1);
    let filled = 0;
    while (filled < buffer.byteLength) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.byteLength - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled > maxBytes) refuse('TOO_LARGE', `${path} is larger than the limit of ${maxBytes} bytes`);
    return new Uint8Array(buffer.buffer, buffer.byteOffset, filled);
  } catch (cause) {
    if (cause instanceof SnapshotError) throw cause;
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  } finally {
    await handle.close();
  }
}

/** Key files and snapshots a publisher edits are small; 1 MiB is far above any real one. */
const SMALL_FILE_LIMIT = 1024 * 1024;

export async function readJsonFile(path: string, what: string): Promise<unknown> {
  const bytes = await readBounded(path, SMALL_FILE_LIMIT);
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    return refuse('MALFORMED', `${what} ${path} is not JSON: ${(cause as Error).message}`, cause);
  }
}

export async function readKey(path: string): Promise<PublicKey | SigningKey> {
  return fromKeyFile(await readJsonFile(path, 'key file'), `key file ${path}`);
}

export async function readSigningKey(path: string): Promise<SigningKey> {
  const key = await readKey(path);
  if (!isSigningKey(key)) refuse('KEY_INVALID', `key file ${path} holds no private key; signing needs one`);
  return key;
}

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    return refuse('IO', `cannot read ${path}: ${describeFsError(cause)}`, cause);
  }
}

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
