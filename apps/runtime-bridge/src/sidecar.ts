import { readFile, rm } from 'node:fs/promises';

import type { RuntimeEnvironment } from '@resultity/bridge-protocol';
import { isLoopbackHost, writeFileAtomic } from '@resultity/node-kit';

import { type ConnectOptions, type RuntimeBridge, connect } from './bridge.js';
import { BridgeError } from './errors.js';

/** The HTTP call the sidecar makes; `fetch` by default, replaceable in unit tests. */
export type PostPort = (
  url: string,
  init: { method: 'POST'; headers: Record<string, string>; body: string; signal: AbortSignal },
) => Promise<{ ok: boolean; status: number }>;

/** A bridge for a runtime not written in Node: it hands each environment over through a file and/or a local admin URL. */
export interface SidecarOptions extends Omit<ConnectOptions, 'onChange'> {
  /** Where the environment is written as JSON, atomically (temp file, fsync, rename). */
  writeFile?: string;
  /** The runtime's admin URL (loopback only) the environment is POSTed to as JSON; any 2xx counts as taken. */
  postUrl?: string;
  /** How long the runtime has to answer the POST. Default 10 s. */
  postTimeoutMs?: number;
  post?: PostPort;
}

function checkPostUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new BridgeError('SIDECAR_CONFIG', `expected an http:// admin URL, found ${url}`, { cause: error });
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  const loopback = isLoopbackHost(host);
  if (parsed.protocol !== 'http:' || !loopback) {
    throw new BridgeError('SIDECAR_CONFIG', `expected an http:// admin URL on a loopback address, found ${parsed.protocol}//${host}`);
  }
}

/**
 * Starts the sidecar: every environment is written and/or POSTed before it is acknowledged.
 * When the POST fails after the file was written, the previous file is put back, so the
 * file and the runtime never disagree with what the Agent was told.
 */
export async function startSidecar(options: SidecarOptions): Promise<RuntimeBridge> {
  const { writeFile: filePath, postUrl, postTimeoutMs = 10_000, post = fetch as unknown as PostPort, ...connectOptions } = options;
  if (filePath === undefined && postUrl === undefined) {
    throw new BridgeError('SIDECAR_CONFIG', 'expected --write FILE and/or --post URL, found neither');
  }
  if (postUrl !== undefined) checkPostUrl(postUrl);

  async function deliver(env: RuntimeEnvironment): Promise<void> {
    const body = `${JSON.stringify(env, null, 2)}\n`;
    let previous: string | null = null;
    if (filePath !== undefined) {
      previous = await readFile(filePath, 'utf8').catch(() => null);
      await writeFileAtomic(filePath, body).catch((error: unknown) => {
        throw new BridgeError('APPLY_FAILED', `cannot write ${filePath}: ${(error as Error).message}`, { cause: error });
      });
    }
    if (postUrl === undefined) return;
    try {
      const response = await post(postUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(postTimeoutMs),
      });
      if (!response.ok) throw new BridgeError('APPLY_FAILED', `expected a 2xx answer from ${postUrl}, found ${response.status}`);
    } catch (error) {
      if (filePath !== undefined) {
        await (previous === null ? rm(filePath, { force: true }) : writeFileAtomic(filePath, previous));
      }
      if (error instanceof BridgeError) throw error;
      throw new BridgeError('APPLY_FAILED', `cannot POST the environment to ${postUrl}: ${(error as Error).message}`, { cause: error });
    }
  }

  return connect({ ...connectOptions, onChange: (env) => deliver(env) });
}
