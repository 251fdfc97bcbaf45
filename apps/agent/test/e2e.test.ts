import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { originPaths } from '@resultity/snapshot/origin';
import { createHash } from 'node:crypto';

import {
  SNAPSHOT_PAYLOAD_TYPE,
  type SnapshotErrorCode,
  canonicalBytes,
  generateSigningKey,
  isRetryableCode,
  signEnvelope,
  signRoot,
} from '@resultity/snapshot';
import { tempDir } from '@resultity/testkit';
import { devSnapshot } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Setup, cli, setup } from './helpers.js';

let bump = 0;
/**
 * nginx's ETag is mtime and size; two hints of one length written within a second would share
 * one, so each hand-written hint gets an mtime of its own.
 */
async function writeLatest(dir: string, digest: string, sequence: number) {
  const path = join(dir, originPaths.latest('testnet'));
  await writeFile(path, JSON.stringify({ config_digest: digest, sequence }));
  bump += 1;
  const when = new Date(Date.now() + bump * 1000);
  await utimes(path, when, when);
}

async function auditTypes(stateDir: string): Promise<{ type: string; code?: string }[]> {
  const text = await readFile(join(stateDir, 'audit.jsonl'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; code?: string });
}

async function status(config: string): Promise<{ applied: { digest: string; sequence: number } | null; last_error: { code: string } | null }> {
  const result = await cli(['status', '--config', config, '--json']);
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout);
}

describe.each(['dev', 'nginx'] as const)('sync --once against the %s origin', (kind) => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  const digests: string[] = [];

  beforeAll(async () => {
    work = await tempDir(`agent-e2e-${kind}-`);
    s = await setup(work.path, kind);
  });
  afterAll(async () => {
    await s.close();
    await work.cleanup();
  });

  it('applies the first snapshot and exits 0', async () => {
    const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
    digests.push(digest);
    const result = await cli(['sync', '--once', '--config', s.config]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`applied ${digest}`);
    expect((await status(s.config)).applied).toEqual({ digest, sequence: 1 });
  });

  it('re-syncs to no change (ETag → 304) and exits 0', async () => {
    const result = await cli(['sync', '--once', '--config', s.config]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('up to date');
    const state = JSON.parse(await readFile(join(s.stateDir, 'state.json'), 'utf8'));
    expect(state.etag).toEqual(expect.any(String));
  });

  it('applies an update', async () => {
    const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, maxTokens: 2048 }));
    digests.push(digest);
    const result = await cli(['sync', '--once', '--config', s.config]);
    expect(result.code).toBe(0);
    expect((await status(s.config)).applied).toEqual({ digest, sequence: 2 });
  });

  describe('refused updates keep the last-known-good and are audited with their code', () => {
    const hostile: [string, () => Promise<void>][] = [
      [
        'SIGNATURE_THRESHOLD',
        async () => {
          const signed = s.net.sign(devSnapshot({ network: 'testnet', sequence: 3 }), [generateSigningKey()]);
          await place(signed.digest, 3, signed.bytes);
        },
      ],
      [
        'EXPIRED',
        async () => {
          const snap = devSnapshot({ network: 'testnet', sequence: 4, now: new Date('2020-01-01T00:00:00Z') });
          const signed = s.net.sign(snap);
          await place(signed.digest, 4, signed.bytes);
        },
      ],
      [
        'NETWORK_MISMATCH',
        async () => {
          const signed = s.net.sign(devSnapshot({ network: 'othernet', sequence: 5 }));
          await place(signed.digest, 5, signed.bytes);
        },
      ],
      [
        'ROLLBACK',
        async () => {
          const signed = s.net.sign(devSnapshot({ network: 'testnet', sequence: 1, maxTokens: 7 }));
          await place(signed.digest, 1, signed.bytes);
        },
      ],
      [
        'DIGEST_MISMATCH',
        async () => {
          const a = s.net.sign(devSnapshot({ network: 'testnet', sequence: 6 }));
          const b = s.net.sign(devSnapshot({ network: 'testnet', sequence: 7 }));
          await place(a.digest, 6, b.bytes);
        },
      ],
      [
        'TOO_LARGE',
        async () => {
          const digest = `sha256:${'c'.repeat(64)}`;
          await place(digest, 8, new Uint8Array(200 * 1024).fill(0x20));
        },
      ],
      [
        'SEQUENCE_CONFLICT',
        async () => {
          const signed = s.net.sign(devSnapshot({ network: 'testnet', sequence: 2, maxTokens: 3 }));
          await place(signed.digest, 2, signed.bytes);
        },
      ],
      [
        'SCHEMA_INVALID',
        async () => {
          const value = { ...devSnapshot({ network: 'testnet', sequence: 20 }), models: [{ name: 'Bad Name!' }] };
          await placeRaw(SNAPSHOT_PAYLOAD_TYPE, canonicalBytes(value), 20);
        },
      ],
      [
        'UNSUPPORTED_SCHEMA',
        async () => {
          await placeRaw(SNAPSHOT_PAYLOAD_TYPE, canonicalBytes({ ...devSnapshot({ network: 'testnet', sequence: 21 }), schema: 2 }), 21);
        },
      ],
      [
        'NOT_CANONICAL',
        async () => {
          const text = JSON.stringify(devSnapshot({ network: 'testnet', sequence: 22 }), null, 2);
          await placeRaw(SNAPSHOT_PAYLOAD_TYPE, new TextEncoder().encode(text), 22);
        },
      ],
      [
        'PAYLOAD_TYPE',
        async () => {
          await placeRaw('application/vnd.other+json', canonicalBytes(devSnapshot({ network: 'testnet', sequence: 23 })), 23);
        },
      ],
      [
        'MALFORMED',
        async () => {
          await place(`sha256:${'d'.repeat(64)}`, 9, new TextEncoder().encode('{"payloadType": 1'));
        },
      ],
    ];

    /** Signs arbitrary payload bytes with the network's key, as a hostile or broken publisher could. */
    async function placeRaw(payloadType: string, payload: Uint8Array, sequence: number) {
      const envelope = signEnvelope(payloadType, payload, [s.net.key]);
      const digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
      await place(digest, sequence, new TextEncoder().encode(JSON.stringify(envelope)));
    }

    async function place(digest: string, sequence: number, bytes: Uint8Array) {
      const dir = s.net.originDir;
      await writeFile(join(dir, originPaths.snapshot('testnet', digest.slice(7))), bytes);
      await writeLatest(dir, digest, sequence);
    }

    it.each(hostile)('%s', async (code, arrange) => {
      await arrange();
      const result = await cli(['sync', '--once', '--config', s.config]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^${code}: `));
      expect((await status(s.config)).applied).toEqual({ digest: digests[1], sequence: 2 });
      const entries = await auditTypes(s.stateDir);
      // Bytes that are not the digest asked for (or not an envelope at all) say nothing about that
      // digest's content: a transport failure, audited as a failed fetch, with no retry budget spent.
      const type = isRetryableCode(code as SnapshotErrorCode) ? 'fetch' : 'refused';
      expect(entries.filter((e) => e.type === type).at(-1)?.code).toBe(code);
    });
  });

  describe('the retry budget', () => {
    it('stops fetching a digest after retry_budget refusals and says so', async () => {
      const signed = s.net.sign(devSnapshot({ network: 'testnet', sequence: 10 }), [generateSigningKey()]);
      await writeFile(join(s.net.originDir, originPaths.snapshot('testnet', signed.digest.slice(7))), signed.bytes);
      await writeLatest(s.net.originDir, signed.digest, 10);
      for (let i = 0; i < 3; i++) expect((await cli(['sync', '--once', '--config', s.config])).stderr).toMatch(/^SIGNATURE_THRESHOLD/);
      const refusals = (await auditTypes(s.stateDir)).filter((e) => e.type === 'refused').length;
      const after = await cli(['sync', '--once', '--config', s.config]);
      expect(after.code).toBe(1);
      expect(after.stderr).toMatch(/^RETRY_BUDGET_EXHAUSTED: /);
      const entries = await auditTypes(s.stateDir);
      expect(entries.filter((e) => e.type === 'refused')).toHaveLength(refusals);
      expect(entries.some((e) => e.type === 'budget-exhausted')).toBe(true);
    });

    it('applies again once a newer snapshot appears', async () => {
      const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 11 }));
      digests.push(digest);
      const result = await cli(['sync', '--once', '--config', s.config]);
      expect(result.code).toBe(0);
      expect((await status(s.config)).applied).toEqual({ digest, sequence: 11 });
    });
  });

  describe('operator rollback', () => {
    it('goes back to the previous snapshot, is audited, and stays pinned until a newer sequence', async () => {
      const back = await cli(['rollback', '--config', s.config, '--to', digests[1] as string]);
      expect(back.stderr).toBe('');
      expect(back.code).toBe(0);
      expect((await status(s.config)).applied).toEqual({ digest: digests[1], sequence: 2 });
      const pinned = await cli(['sync', '--once', '--config', s.config]);
      expect(pinned.code).toBe(0);
      expect(pinned.stdout).toContain('pinned');
      expect((await status(s.config)).applied?.sequence).toBe(2);
      const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 12 }));
      expect((await cli(['sync', '--once', '--config', s.config])).code).toBe(0);
      expect((await status(s.config)).applied).toEqual({ digest, sequence: 12 });
      expect((await auditTypes(s.stateDir)).some((e) => e.type === 'rollback')).toBe(true);
    });

    it('lists what it can go back to in history', async () => {
      const result = await cli(['history', '--config', s.config]);
      expect(result.code).toBe(0);
      for (const d of digests) expect(result.stdout).toContain(d);
    });
  });

  describe('audit verify', () => {
    it('accepts the intact log, then names the first entry of a tampered one', async () => {
      const ok = await cli(['audit', 'verify', '--config', s.config]);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain('audit log intact');
      const path = join(s.stateDir, 'audit.jsonl');
      const lines = (await readFile(path, 'utf8')).trim().split('\n');
      lines[3] = (lines[3] as string).replace('"type":"', '"type":"x');
      await writeFile(path, `${lines.join('\n')}\n`);
      const broken = await cli(['audit', 'verify', '--config', s.config]);
      expect(broken.code).toBe(1);
      expect(broken.stderr).toMatch(/^AUDIT_BROKEN: .*line 5 \(seq 4\)/);
    });
  });
});

describe('configuration errors', () => {
  it('name the field and exit 2', async () => {
    const work = await tempDir('agent-config-');
    try {
      const file = join(work.path, 'agent.json');
      await writeFile(file, JSON.stringify({ network: 'testnet', origin: 'ftp://x', node_id: 'n', trust_root: [], state_dir: 's' }));
      const result = await cli(['status', '--config', file]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/^CONFIG_INVALID: .*origin: must be an http\(s\) URL/);
      expect(result.stderr).toContain('trust_root');

      const missing = await cli(['status', '--config', join(work.path, 'nowhere.json')]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/^CONFIG_INVALID: configuration: cannot read .*nowhere\.json: no such file/);
    } finally {
      await work.cleanup();
    }
  });
});

describe('a node without a reachable Docker engine', () => {
  it('still applies a snapshot with no containers, and status says the engine is unreachable', async () => {
    const work = await tempDir('agent-nodocker-');
    const s = await setup(work.path, 'dev', { docker: { socket_path: join(work.path, 'no-docker.sock') } });
    try {
      const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
      const result = await cli(['sync', '--once', '--config', s.config]);
      expect(result.code).toBe(0);
      const report = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
      expect(report.applied).toEqual({ digest, sequence: 1 });
      expect(report.containers).toBeNull();
      expect(report.engine).toMatch(/^ENGINE_UNAVAILABLE: /);
      const table = (await cli(['status', '--config', s.config])).stdout;
      expect(table).toMatch(/applied sequence\s+1/);
      expect(table).toMatch(/containers\s+\(engine not reachable\)/);
    } finally {
      await s.close();
      await work.cleanup();
    }
  });
});

describe('plan', () => {
  it('prints the steps the latest snapshot or a given envelope would run, changing nothing', async () => {
    const work = await tempDir('agent-plan-');
    const s = await setup(work.path, 'dev');
    try {
      const files = await import('@resultity/testkit/devnet');
      const server = await files.startFileServer(work.path);
      try {
        const model = await files.makeModel(work.path, server, 'planned', '1.0.0', new Uint8Array(2048).fill(7));
        const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, models: [model] }));
        const latest = await cli(['plan', '--config', s.config]);
        expect(latest.stderr).toBe('');
        expect(latest.code).toBe(0);
        expect(latest.stdout).toContain(`plan for ${digest} (sequence 1)`);
        expect(latest.stdout).toMatch(/1\. fetch model planned@1\.0\.0/);

        const envelope = s.net.sign(devSnapshot({ network: 'testnet', sequence: 2 }));
        const file = join(work.path, 'next.json');
        await writeFile(file, envelope.bytes);
        const given = await cli(['plan', '--config', s.config, file]);
        expect(given.code).toBe(0);
        expect(given.stdout).toContain(`plan for ${envelope.digest} (sequence 2)`);

        // An oversize file is refused by its size, before it is read whole or parsed.
        const huge = join(work.path, 'huge.json');
        await writeFile(huge, Buffer.alloc(5 * 1024 * 1024, 0x20));
        const tooLarge = await cli(['plan', '--config', s.config, huge]);
        expect(tooLarge.code).toBe(1);
        expect(tooLarge.stderr).toMatch(/^TOO_LARGE: .*huge\.json is larger than the limit of \d+ bytes/);

        const report = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
        expect(report.applied).toBeNull();
      } finally {
        await server.close();
      }
    } finally {
      await s.close();
      await work.cleanup();
    }
  });
});

describe('with the network down at start', () => {
  it('applies nothing, exits 1 with FETCH_FAILED, keeps what runs, and status still answers', async () => {
    const work = await tempDir('agent-down-');
    const s = await setup(work.path, 'dev');
    try {
      const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
      expect((await cli(['sync', '--once', '--config', s.config])).code).toBe(0);
      await s.close();
      await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2 }));
      const result = await cli(['sync', '--once', '--config', s.config]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^FETCH_FAILED: /);
      const report = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
      expect(report.applied).toEqual({ digest, sequence: 1 });
      expect(report.last_error.code).toBe('FETCH_FAILED');
    } finally {
      await work.cleanup();
    }
  });
});

describe('trust root rotation', () => {
  it('refuses a broken rotation with ROOT_ROTATION_INVALID and an expired root with ROOT_EXPIRED, then follows a valid rotation', async () => {
    const work = await tempDir('agent-roots-');
    const s = await setup(work.path, 'dev');
    const rootFile = (version: number) => join(s.net.originDir, originPaths.root('testnet', version));
    const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    try {
      const first = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
      expect((await cli(['sync', '--once', '--config', s.config])).code).toBe(0);

      // Root 2 signed only by its own new key: the keys of root 1 never vouched for it.
      const k2 = generateSigningKey();
      const unvouched = signRoot({ network: 'testnet', version: 2, expiresAt: '2099-01-01T00:00:00Z', threshold: 1, keys: [k2] }, [k2]);
      await writeFile(rootFile(2), bytes(unvouched.envelope));
      const bySecondKey = s.net.sign(devSnapshot({ network: 'testnet', sequence: 2 }), [k2]);
      await writeFile(join(s.net.originDir, originPaths.snapshot('testnet', bySecondKey.digest.slice(7))), bySecondKey.bytes);
      await writeLatest(s.net.originDir, bySecondKey.digest, 2);
      const broken = await cli(['sync', '--once', '--config', s.config]);
      expect(broken.code).toBe(1);
      expect(broken.stderr).toMatch(/^ROOT_ROTATION_INVALID: /);

      // Root 2 properly vouched for, but already expired.
      const expired = signRoot({ network: 'testnet', version: 2, expiresAt: '2021-01-01T00:00:00Z', threshold: 1, keys: [k2] }, [s.net.key, k2]);
      await writeFile(rootFile(2), bytes(expired.envelope));
      const refused = await cli(['sync', '--once', '--config', s.config]);
      expect(refused.stderr).toMatch(/^ROOT_EXPIRED: /);
      expect(JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout).applied.digest).toBe(first.digest);

      // Root 3, vouched for by root 2's key, current: snapshots signed by its key are accepted.
      const k3 = generateSigningKey();
      const current = signRoot({ network: 'testnet', version: 3, expiresAt: '2099-01-01T00:00:00Z', threshold: 1, keys: [k3] }, [k2, k3]);
      await writeFile(rootFile(3), bytes(current.envelope));
      const byThirdKey = s.net.sign(devSnapshot({ network: 'testnet', sequence: 3 }), [k3]);
      await writeFile(join(s.net.originDir, originPaths.snapshot('testnet', byThirdKey.digest.slice(7))), byThirdKey.bytes);
      await writeLatest(s.net.originDir, byThirdKey.digest, 3);
      const applied = await cli(['sync', '--once', '--config', s.config]);
      expect(applied.stderr).toBe('');
      expect(applied.code).toBe(0);
      const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
      expect(audit).toContain('"type":"root-rotated"');
    } finally {
      await s.close();
      await work.cleanup();
    }
  });
});

describe('a model whose every mirror fails', () => {
  it('fails with DOWNLOAD_FAILED naming only codes, keeps the mirrors in the local audit log, and spends no budget', async () => {
    const work = await tempDir('agent-e2e-mirrors-');
    const s = await setup(work.path, 'dev', { retry_budget: 1 });
    try {
      const model = {
        name: 'absent',
        version: '1.0.0',
        sha256: 'a'.repeat(64),
        size: 16,
        // A 404 from the origin's own server, then a port nothing listens on.
        urls: [`${s.origin.url}/no-such-model.bin`, 'http://127.0.0.1:1/absent.bin'],
      };
      const { digest } = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, models: [model] }));
      // Whole words: the snapshot digest in the message is hex and can hold "404".
      for (let attempt = 0; attempt < 2; attempt++) {
        const result = await cli(['sync', '--once', '--config', s.config]);
        expect(result.code).toBe(1);
        expect(result.stderr).toMatch(/^DOWNLOAD_FAILED: /);
        expect(result.stderr).not.toMatch(/127\.0\.0\.1|\b404\b/);
      }
      const shown = await status(s.config);
      expect(shown.last_error?.code).toBe('DOWNLOAD_FAILED');
      expect(JSON.stringify(shown.last_error)).not.toMatch(/127\.0\.0\.1|\b404\b/);
      const state = JSON.parse(await readFile(join(s.stateDir, 'state.json'), 'utf8'));
      expect(state.failures[digest]).toBeUndefined();
      const entries = (await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string; mirrors?: { index: number; code: string }[] });
      const failed = entries.filter((e) => e.type === 'apply-failed').at(-1);
      expect(failed?.mirrors?.map((m) => m.code)).toEqual(['MIRROR_HTTP_STATUS', 'MIRROR_UNREACHABLE']);
    } finally {
      await s.close();
      await work.cleanup();
    }
  });
});
