import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// These tests run the built binary, exactly as a publisher would.
const BIN = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;
let cleanup: () => Promise<void>;
const secrets: string[] = [];

beforeAll(async () => {
  ({ path: dir, cleanup } = await tempDir('resultity-cli-'));
  for (const name of ['k1', 'k2', 'k3']) {
    const run = await cli(['keygen', '--out', `${name}.json`], dir);
    expect(run.code).toBe(0);
    secrets.push((JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as { private_key: string }).private_key);
  }
  await writeFile(join(dir, 'snapshot.json'), JSON.stringify(sampleSnapshot({ sequence: 10 }), null, 2));
  await writeFile(join(dir, 'snapshot-old.json'), JSON.stringify(sampleSnapshot({ sequence: 9 }), null, 2));
});

afterAll(async () => {
  await cleanup();
});

function expectNoSecrets(run: Run) {
  for (const secret of secrets) {
    expect(run.stdout).not.toContain(secret);
    expect(run.stderr).not.toContain(secret);
  }
}

describe('resultity-snapshot keygen', () => {
  it('writes the private key with mode 0600 and prints only the keyid and public key', async () => {
    const run = await cli(['keygen', '--out', 'k4.json'], dir);
    expect(run.code).toBe(0);
    const file = JSON.parse(await readFile(join(dir, 'k4.json'), 'utf8')) as { keyid: string; public_key: string; private_key: string };
    expect((await stat(join(dir, 'k4.json'))).mode & 0o777).toBe(0o600);
    expect(run.stdout).toBe(`keyid: ${file.keyid}\npublic_key: ${file.public_key}\n`);
    expect(run.stdout).not.toContain(file.private_key);
  });

  it('refuses to overwrite an existing key file', async () => {
    const run = await cli(['keygen', '--out', 'k1.json'], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^IO: cannot write k1\.json: already exists/);
  });
});

describe('resultity-snapshot root, sign, verify', () => {
  it('creates a root, signs a snapshot and verifies it, printing the digest', async () => {
    expect(
      (
        await cli(
          ['root', 'init', '--network', 'testnet', '--key', 'k1.json', '--threshold', '1', '--expires', '2099-01-01T00:00:00Z', '--out', 'root1.json'],
          dir,
        )
      ).code,
    ).toBe(0);
    const signed = await cli(['sign', '--key', 'k1.json', 'snapshot.json'], dir);
    expect(signed.code).toBe(0);
    expectNoSecrets(signed);
    await writeFile(join(dir, 'envelope.json'), signed.stdout);
    const digest = await cli(['digest', 'envelope.json'], dir);
    const sameDigest = await cli(['digest', 'snapshot.json'], dir);
    expect(digest.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(sameDigest.stdout).toBe(digest.stdout);

    const verified = await cli(['verify', '--root', 'root1.json', 'envelope.json'], dir);
    expect(verified).toMatchObject({ code: 0, stdout: digest.stdout });
  });

  it('walks a rotation given several roots, oldest first', async () => {
    const rotate = await cli(
      [
        'root',
        'rotate',
        '--prev',
        'root1.json',
        '--sign-with',
        'k1.json',
        '--key',
        'k2.json',
        '--key',
        'k3.json',
        '--threshold',
        '2',
        '--expires',
        '2099-01-01T00:00:00Z',
        '--out',
        'root2.json',
      ],
      dir,
    );
    expect(rotate.code).toBe(0);
    expectNoSecrets(rotate);
    const byNew = await cli(['sign', '--key', 'k2.json', '--key', 'k3.json', 'snapshot.json'], dir);
    await writeFile(join(dir, 'envelope2.json'), byNew.stdout);
    expect((await cli(['verify', '--root', 'root1.json', '--root', 'root2.json', 'envelope2.json'], dir)).code).toBe(0);

    const byOld = await cli(['verify', '--root', 'root1.json', '--root', 'root2.json', 'envelope.json'], dir);
    expect(byOld.code).toBe(1);
    expect(byOld.stderr).toBe('SIGNATURE_THRESHOLD: snapshot signed by 0/2 trusted keys (1 signatures present)\n');
  });

  it('refuses a rollback with exit 1 and CODE: message on stderr, no stack trace', async () => {
    const signed = await cli(['sign', '--key', 'k1.json', 'snapshot-old.json'], dir);
    await writeFile(join(dir, 'old.json'), signed.stdout);
    const digest = `sha256:${'0'.repeat(64)}`;
    const run = await cli(['verify', '--root', 'root1.json', '--applied-sequence', '10', '--applied-digest', digest, 'old.json'], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('ROLLBACK: snapshot sequence 9 is below the applied 10\n');
  });

  it('refuses an expired snapshot given --now', async () => {
    const run = await cli(['verify', '--root', 'root1.json', '--now', '2100-01-01T00:00:00Z', 'envelope.json'], dir);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^ROOT_EXPIRED: /);
  });

  it.each([
    [['verify', 'envelope.json'], 'a missing --root'],
    [['verify', '--root', 'root1.json', '--now', 'yesterday', 'envelope.json'], 'a bad --now'],
    [['verify', '--root', 'root1.json', '--applied-sequence', '3', 'envelope.json'], '--applied-sequence without --applied-digest'],
    [['frobnicate'], 'an unknown command'],
  ])('exits 2 on usage errors (%s, %s)', async (args) => {
    const run = await cli(args as string[], dir);
    expect(run.code).toBe(2);
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it('gives a clear code, not a stack trace, for bad input files', async () => {
    await writeFile(join(dir, 'garbage.json'), '{"payloadType": 1');
    for (const args of [
      ['verify', '--root', 'root1.json', 'garbage.json'],
      ['verify', '--root', 'garbage.json', 'envelope.json'],
      ['verify', '--root', 'root1.json', 'missing.json'],
      ['sign', '--key', 'k1.json.pub', 'snapshot.json'],
      ['sign', '--key', 'k1.json', 'garbage.json'],
      ['digest', 'garbage.json'],
    ]) {
      const run = await cli(args, dir);
      expect(run.code, args.join(' ')).toBe(1);
      expect(run.stderr, args.join(' ')).toMatch(/^[A-Z_]+: .+\n$/);
    }
  });

  it('prints canonical bytes without a trailing newline', async () => {
    await writeFile(join(dir, 'messy.json'), '{ "b": 2.50, "a": [ 1e2 ] }\n');
    const run = await cli(['canonicalize', 'messy.json'], dir);
    expect(run.stdout).toBe('{"a":[100],"b":2.5}');
  });
});

describe('resultity-snapshot publish and serve', () => {
  let server: ChildProcess | undefined;
  afterAll(() => {
    server?.kill('SIGTERM');
  });

  it('writes the SPEC §5 layout with latest.json last, and refuses to go back in sequence', async () => {
    const origin = join(dir, 'origin');
    const run = await cli(['publish', '--origin', origin, '--root', 'root1.json', 'envelope.json'], dir);
    expect(run.code).toBe(0);
    const digest = (await cli(['digest', 'envelope.json'], dir)).stdout.trim();
    const hex = digest.slice('sha256:'.length);
    expect(JSON.parse(await readFile(join(origin, 'v1/testnet/latest.json'), 'utf8'))).toEqual({ config_digest: digest, sequence: 10 });
    expect(await readdir(join(origin, 'v1/testnet/snapshots'))).toEqual([`${hex}.json`]);
    expect(await readdir(join(origin, 'v1/testnet/root'))).toEqual(['1.json']);

    const back = await cli(['publish', '--origin', origin, 'old.json'], dir);
    expect(back.code).toBe(1);
    expect(back.stderr).toMatch(/^PUBLISH_CONFLICT: origin already serves sequence 10/);
  });

  it('serves the tree with ETags, answers If-None-Match with 304, and keeps heartbeats', async () => {
    server = spawn(process.execPath, [BIN, 'serve', '--origin', join(dir, 'origin'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const url = await new Promise<string>((resolve, reject) => {
      server?.stdout?.on('data', (chunk: Buffer) => {
        const match = /at (http:\/\/\S+)/.exec(chunk.toString());
        if (match?.[1]) resolve(match[1]);
      });
      server?.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
    });
    const first = await fetch(`${url}/v1/testnet/latest.json`);
    expect(first.status).toBe(200);
    const etag = first.headers.get('etag');
    expect(etag).toBeTruthy();
    const again = await fetch(`${url}/v1/testnet/latest.json`, { headers: { 'If-None-Match': etag ?? '' } });
    expect(again.status).toBe(304);
    expect((await fetch(`${url}/v1/testnet/root/2.json`)).status).toBe(404);
    expect((await fetch(`${url}/v1/testnet/../../k1.json`)).status).toBe(404);

    const beat = await fetch(`${url}/v1/testnet/nodes/node-1/heartbeat`, {
      method: 'POST',
      body: JSON.stringify({ config_digest: 'sha256:x', sequence: 10, status: 'ok', agent_version: '0.1.0' }),
    });
    expect(beat.status).toBe(204);
    const nodes = (await (await fetch(`${url}/v1/testnet/nodes`)).json()) as { nodes: { node_id: string; body: { sequence: number } }[] };
    expect(nodes.nodes).toEqual([expect.objectContaining({ node_id: 'node-1', body: expect.objectContaining({ sequence: 10 }) })]);

    const exited = new Promise<number | null>((resolve) => server?.once('exit', resolve));
    server.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('holds long-poll requests up to --max-held and answers one more with 503', async () => {
    const held = spawn(process.execPath, [BIN, 'serve', '--origin', join(dir, 'origin'), '--port', '0', '--max-held', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = held;
    const url = await new Promise<string>((resolve, reject) => {
      held.stdout?.on('data', (chunk: Buffer) => {
        const match = /at (http:\/\/\S+)/.exec(chunk.toString());
        if (match?.[1]) resolve(match[1]);
      });
      held.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
    });
    const latest = `${url}/v1/testnet/latest.json`;
    const etag = (await fetch(latest)).headers.get('etag') ?? '';
    // Whichever of two requests is held first, the bound leaves no room for the other.
    const answers = await Promise.all([1, 2].map(() => fetch(`${latest}?wait=3`, { headers: { 'If-None-Match': etag } })));
    expect(answers.map((res) => res.status).sort()).toEqual([304, 503]);
    expect(answers.map((res) => res.headers.get('resultity-long-poll'))).toEqual(['1', '1']);

    const exited = new Promise<number | null>((resolve) => held.once('exit', resolve));
    held.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
