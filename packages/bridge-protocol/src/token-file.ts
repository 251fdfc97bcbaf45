import { randomBytes } from 'node:crypto';
import { open, stat, writeFile } from 'node:fs/promises';

import { TokenError } from './errors.js';

/** A token is header-safe printable ASCII, long enough not to be guessed. */
export const TOKEN_PATTERN = /^[\x21-\x7e]{16,1024}$/;
const MAX_TOKEN_FILE_BYTES = 4096;

/** Throws TOKEN_INVALID unless the token can travel in an Authorization header and is at least 16 characters. */
export function checkToken(token: string): string {
  if (!TOKEN_PATTERN.test(token)) {
    throw new TokenError('TOKEN_INVALID', `expected a token of 16 to 1024 printable ASCII characters without spaces, found ${token.length} characters`);
  }
  return token;
}

/**
 * Reads the bearer token from a file that only its owner may read (mode 0600 or stricter);
 * a wider mode is refused, since anyone who can read the file can steer the runtime.
 */
export async function readTokenFile(path: string): Promise<string> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new TokenError('TOKEN_FILE_UNREADABLE', `cannot open the token file ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new TokenError('TOKEN_FILE_UNREADABLE', `expected ${path} to be a regular file`);
    const mode = info.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new TokenError(
        'TOKEN_FILE_PERMISSIONS',
        `expected the token file ${path} to have mode 0600 (no group or other access), found 0${mode.toString(8)}; run chmod 600 ${path}`,
      );
    }
    if (info.size > MAX_TOKEN_FILE_BYTES) {
      throw new TokenError('TOKEN_INVALID', `expected a token file of at most ${MAX_TOKEN_FILE_BYTES} bytes, found ${info.size}`);
    }
    const buffer = Buffer.alloc(MAX_TOKEN_FILE_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return checkToken(buffer.subarray(0, bytesRead).toString('utf8').trim());
  } finally {
    await handle.close();
  }
}

/** Reads the token file, or creates it (mode 0600, 32 random bytes as hex) when there is none. */
export async function ensureTokenFile(path: string): Promise<string> {
  const exists = await stat(path).then(
    () => true,
    (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? false : Promise.reject(error)),
  );
  if (!exists) {
    try {
      await writeFile(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new TokenError('TOKEN_FILE_UNREADABLE', `cannot create the token file ${path}: ${(error as Error).message}`, { cause: error });
      }
    }
  }
  return readTokenFile(path);
}
