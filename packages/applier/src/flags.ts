import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

import { writeFileAtomic } from '@resultity/node-kit';

import { fail } from './errors.js';
import { readSmallFile } from './store.js';
import type { Clock, FlagsStore } from './ports.js';
import type { ParticipationFlags } from './types.js';

function isFlags(value: unknown): value is ParticipationFlags {
  const v = value as ParticipationFlags;
  return (
    typeof v === 'object' &&
    v !== null &&
    (v.mode === 'testnet' || v.mode === 'mainnet') &&
    Array.isArray(v.subclouds) &&
    v.subclouds.every((s) => typeof s === 'string')
  );
}

/** The default FlagsStore: one JSON file, replaced atomically; `null` removes the flags. */
export class FileFlagsStore implements FlagsStore {
  constructor(readonly path: string) {}

  /** Read at every apply's planning: synchronously and non-blocking, as the model store's index (store.ts). */
  async read(): Promise<ParticipationFlags | null> {
    const text = readSmallFile(this.path);
    if (text === null) return null;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (cause) {
      fail('STORE_FAILED', `flags file ${this.path} is not JSON`, cause);
    }
    if (value === null) return null;
    if (!isFlags(value)) fail('STORE_FAILED', `flags file ${this.path} does not hold {mode, subclouds}`);
    return { mode: value.mode, subclouds: [...value.subclouds] };
  }

  async write(flags: ParticipationFlags | null): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await writeFileAtomic(this.path, `${JSON.stringify(flags, null, 2)}\n`);
  }
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};
