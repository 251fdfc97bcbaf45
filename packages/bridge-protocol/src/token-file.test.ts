import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { TokenError } from './errors.js';
import { ensureTokenFile, readTokenFile } from './token-file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resultity-token-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TokenError);
  return (error as TokenError).code;
}

describe('readTokenFile', () => {
  it('reads a 0600 file and trims the newline', async () => {
    const path = join(dir, 'token');
    await writeFile(path, 'abcdefghijklmnopqrstuvwxyz\n', { mode: 0o600 });
    expect(await readTokenFile(path)).toBe('abcdefghijklmnopqrstuvwxyz');
  });

  it('refuses a file others can read with TOKEN_FILE_PERMISSIONS', async () => {
    const path = join(dir, 'token');
    await writeFile(path, 'abcdefghijklmnopqrstuvwxyz\n');
    await chmod(path, 0o644);
    expect(await codeOf(readTokenFile(path))).toBe('TOKEN_FILE_PERMISSIONS');
  });

  it('refuses a short token with TOKEN_INVALID and a missing file with TOKEN_FILE_UNREADABLE', async () => {
    const path = join(dir, 'token');
    await writeFile(path, 'short', { mode: 0o600 });
    expect(await codeOf(readTokenFile(path))).toBe('TOKEN_INVALID');
    expect(await codeOf(readTokenFile(join(dir, 'missing')))).toBe('TOKEN_FILE_UNREADABLE');
  });
});

describe('ensureTokenFile', () => {
  it('creates a 0600 token once and reads the same one afterwards', async () => {
    const path = join(dir, 'token');
    const first = await ensureTokenFile(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await ensureTokenFile(path)).toBe(first);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
  });
});
