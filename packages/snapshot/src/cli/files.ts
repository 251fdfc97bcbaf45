import { FileError, describeFsError, readFileBounded as readBounded } from '@resultity/node-kit';

import { fromKeyFile, isSigningKey, type PublicKey, type SigningKey } from '../ed25519.js';
import { refuse } from '../errors.js';

/** Key files and snapshots a publisher edits are small; 1 MiB is far above any real one. */
const SMALL_FILE_LIMIT = 1024 * 1024;

export async function readJsonFile(path: string, what: string): Promise<unknown> {
  const bytes = await readFileBounded(path, SMALL_FILE_LIMIT);
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

/** The CLI's bounded read: the same codes (IO, TOO_LARGE) and message, as a SnapshotError. */
export async function readFileBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  try {
    return await readBounded(path, maxBytes);
  } catch (error) {
    if (error instanceof FileError) return refuse(error.code, error.message, error.cause);
    throw error;
  }
}

export { describeFsError };
