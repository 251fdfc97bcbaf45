import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { writeFileAtomic } from '@resultity/node-kit';
import {
  type Model,
  type SigningKey,
  type SnapshotInput,
  cryptoReady,
  fromKeyFile,
  generateSigningKey,
  isSigningKey,
  signRoot,
  signSnapshot,
  toKeyFile,
} from '@resultity/snapshot';
import { publishSnapshot } from '@resultity/snapshot/origin';

/** A local network for development and tests: a signing key, a root, and a published origin tree. */
export interface DevNetwork {
  readonly network: string;
  readonly dir: string;
  readonly originDir: string;
  readonly rootFile: string;
  readonly key: SigningKey;
  /** Signs and publishes a snapshot; returns its digest and the envelope bytes. */
  publish(snapshot: SnapshotInput, options?: { now?: Date }): Promise<{ digest: string; sequence: number; bytes: Uint8Array }>;
  /** Signs without publishing (for `plan ENVELOPE` and hostile-origin tests). */
  sign(snapshot: SnapshotInput | Record<string, unknown>, keys?: readonly SigningKey[]): { digest: string; bytes: Uint8Array };
}

/** Creates (or reopens) a dev network under `dir`: keys/, root/1.json, origin/. */
export async function createDevNetwork(dir: string, network = 'devnet'): Promise<DevNetwork> {
  await cryptoReady();
  const keyFile = join(dir, 'keys', 'signing-key.json');
  let key: SigningKey;
  try {
    const loaded = fromKeyFile(JSON.parse(await readFile(keyFile, 'utf8')), keyFile);
    if (!isSigningKey(loaded)) throw new Error('not a signing key');
    key = loaded;
  } catch {
    key = generateSigningKey();
    await writeFileAtomic(keyFile, `${JSON.stringify(toKeyFile(key, true), null, 2)}\n`, 0o600);
  }
  const rootFile = join(dir, 'root', '1.json');
  const { envelope } = signRoot({ network, version: 1, expiresAt: '2099-01-01T00:00:00Z', threshold: 1, keys: [key] }, [key]);
  let rootBytes: Uint8Array;
  try {
    rootBytes = new Uint8Array(await readFile(rootFile));
  } catch {
    rootBytes = new TextEncoder().encode(JSON.stringify(envelope));
    await writeFileAtomic(rootFile, rootBytes);
  }
  const originDir = join(dir, 'origin');
  const sign = (snapshot: SnapshotInput | Record<string, unknown>, keys: readonly SigningKey[] = [key]) => {
    const signed = signSnapshot(snapshot, keys);
    return { digest: signed.digest, bytes: new TextEncoder().encode(JSON.stringify(signed.envelope)) };
  };
  return {
    network,
    dir,
    originDir,
    rootFile,
    key,
    sign,
    async publish(snapshot, options = {}) {
      const { bytes } = sign(snapshot);
      const result = await publishSnapshot({ dir: originDir, envelope: bytes, roots: [rootBytes], now: options.now ?? new Date() });
      return { digest: result.digest, sequence: result.sequence, bytes };
    },
  };
}

/** A snapshot for the dev network: no containers unless given, one model, short timers. */
export function devSnapshot(input: {
  network: string;
  sequence: number;
  models?: Model[];
  containers?: SnapshotInput['runtime']['containers'];
  maxTokens?: number;
  pollSeconds?: number;
  now?: Date;
  extra?: Record<string, unknown>;
}): SnapshotInput {
  const now = input.now ?? new Date();
  return {
    schema: 1,
    network: input.network,
    sequence: input.sequence,
    issued_at: `${new Date(now.getTime() - 60_000).toISOString().slice(0, 19)}Z`,
    expires_at: `${new Date(now.getTime() + 7 * 86_400_000).toISOString().slice(0, 19)}Z`,
    models: input.models ?? [],
    runtime: { containers: input.containers ?? [] },
    job: {
      max_tokens: input.maxTokens ?? 1024,
      max_queue_size: 16,
      execution_timeout_ms: 60_000,
      validation: [{ field: 'max_tokens', op: 'lte', value: input.maxTokens ?? 1024 }],
    },
    participation: { mode: 'testnet', subclouds: [{ id: 'dev', require: {} }] },
    ttl: { poll_interval_s: input.pollSeconds ?? 2, heartbeat_interval_s: 5, retry_initial_ms: 200, retry_max_ms: 2000, cache_ttl_s: 60 },
    ...input.extra,
  };
}

/**
 * A loopback HTTP server for model files, answering whole files and byte ranges (`bytes=a-b`
 * and `bytes=a-`, as single-stream resumes and chunked downloads ask), optionally throttled so a
 * download lasts long enough to be killed in.
 */
export interface FileServer {
  readonly url: string;
  /** Bytes per second for every response; 0 is unthrottled. */
  throttle: number;
  close(): Promise<void>;
}

export async function startFileServer(dir: string, throttle = 0): Promise<FileServer> {
  const sockets = new Set<import('node:net').Socket>();
  const state = { throttle };
  const server: Server = createServer((req, res) => {
    const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.slice(1));
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      res.writeHead(404).end();
      return;
    }
    const path = join(dir, name);
    readFile(path)
      .then((data) => {
        const size = data.byteLength;
        const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        const start = range ? Number(range[1]) : 0;
        const end = range?.[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
        if (range && start > end) return void res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        const body = data.subarray(start, end + 1);
        res.writeHead(range ? 206 : 200, {
          'content-length': body.byteLength,
          'content-type': 'application/octet-stream',
          'accept-ranges': 'bytes',
          ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
        });
        if (state.throttle <= 0) return void res.end(body);
        const chunk = Math.max(1, Math.floor(state.throttle / 10));
        let offset = 0;
        const timer = setInterval(() => {
          if (res.destroyed || offset >= body.byteLength) {
            clearInterval(timer);
            if (!res.destroyed) res.end();
            return;
          }
          res.write(body.subarray(offset, offset + chunk));
          offset += chunk;
        }, 100);
        res.on('close', () => clearInterval(timer));
      })
      .catch(() => res.writeHead(404).end());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get throttle() {
      return state.throttle;
    },
    set throttle(value: number) {
      state.throttle = value;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Writes a model file for the file server and returns its snapshot entry. */
export async function makeModel(dir: string, server: { url: string }, name: string, version: string, content: Uint8Array): Promise<Model> {
  const file = `${name}-${version}.bin`;
  await writeFileAtomic(join(dir, file), content);
  return { name, version, sha256: createHash('sha256').update(content).digest('hex'), size: content.byteLength, urls: [`${server.url}/${file}`] };
}

/**
 * An Agent configuration for a dev network, written next to its state. Typed by the caller
 * (`satisfies ConfigInput` of @resultity/agent): the testkit cannot depend on the Agent.
 */
export async function writeAgentConfig(file: string, input: object): Promise<string> {
  await writeFileAtomic(file, `${JSON.stringify(input, null, 2)}\n`);
  return file;
}

/** An image in a local registry, as a snapshot's container names it. */
export interface RegistryImage {
  readonly image: string;
  readonly tag: string;
  readonly digest: string;
}

/**
 * Builds a tiny image FROM scratch holding a static busybox and pushes it to a local registry
 * (nothing is pulled from the internet). Needs the docker CLI and a reachable engine.
 */
export async function buildBusyboxImage(options: {
  registry: string;
  busybox?: string;
  repository?: string;
  tag?: string;
  workDir: string;
}): Promise<RegistryImage> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { copyFile, mkdtemp, rm } = await import('node:fs/promises');
  const run = promisify(execFile);
  const context = await mkdtemp(join(options.workDir, 'busybox-image-'));
  try {
    await copyFile(options.busybox ?? process.env.RESULTITY_BUSYBOX ?? '/bin/busybox', join(context, 'busybox'));
    await writeFileAtomic(join(context, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sleep", "3600"]\n');
    const image = `${options.registry}/${options.repository ?? 'resultity-dev/busybox'}`;
    const tag = options.tag ?? '1';
    await run('docker', ['build', '-q', '-t', `${image}:${tag}`, context], { timeout: 120_000 });
    await run('docker', ['push', `${image}:${tag}`], { timeout: 120_000 });
    const { stdout } = await run('docker', ['image', 'inspect', '--format', '{{json .RepoDigests}}', `${image}:${tag}`]);
    const digests = JSON.parse(stdout) as string[];
    const match = digests.find((d) => d.startsWith(`${image}@`));
    if (!match) throw new Error(`no registry digest for ${image}:${tag} after the push (found ${digests.join(', ')})`);
    return { image, tag, digest: match.slice(image.length + 1) };
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}
