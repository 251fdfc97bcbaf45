import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CLOSE_CODES } from '@resultity/bridge-protocol';
import { afterEach, describe, expect, it } from 'vitest';

import { type BridgeAck, type BridgeEndpoint, type BridgeEndpointOptions, EndpointError, startBridgeEndpoint } from '../src/index.js';
import { TOKEN, helloClient, rawClient, sampleEnvironment } from './client.js';

const opened: BridgeEndpoint[] = [];
const cleanups: (() => Promise<void>)[] = [];

async function endpoint(options: Partial<BridgeEndpointOptions> = {}): Promise<BridgeEndpoint> {
  const started = await startBridgeEndpoint({ listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, ...options });
  opened.push(started);
  return started;
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((e) => e.close()));
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

async function until(probe: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the endpoint');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(EndpointError);
  return (error as EndpointError).code;
}

describe('startBridgeEndpoint', () => {
  it('refuses to listen on an address other hosts can reach with NOT_LOOPBACK', async () => {
    expect(await codeOf(startBridgeEndpoint({ listen: { host: '0.0.0.0', port: 0 }, token: TOKEN }))).toBe('NOT_LOOPBACK');
    expect(await codeOf(startBridgeEndpoint({ listen: { host: '192.168.1.10', port: 0 }, token: TOKEN }))).toBe('NOT_LOOPBACK');
  });

  it('refuses a short token with TOKEN_INVALID', async () => {
    expect(await codeOf(startBridgeEndpoint({ listen: { host: '127.0.0.1', port: 0 }, token: 'short' }))).toBe('TOKEN_INVALID');
  });

  it('listens on a unix socket only its owner may open', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'bridge.sock');
    const server = await endpoint({ listen: { socketPath } });
    expect(server.address).toBe(socketPath);
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
    const client = await helloClient(server.address, 'unix-runtime');
    expect(server.connected()).toEqual([{ runtimeId: 'unix-runtime', digest: null }]);
    client.ws.close();
  });

  it('refuses a socket path taken by an ordinary file with SOCKET_PATH_IN_USE', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'bridge.sock');
    await writeFile(socketPath, 'not a socket');
    expect(await codeOf(startBridgeEndpoint({ listen: { socketPath }, token: TOKEN }))).toBe('SOCKET_PATH_IN_USE');
  });

  it('replaces the socket file a killed endpoint left behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'bridge.sock');
    // A process killed with SIGKILL never unlinks its socket: the file stays, nothing answers.
    const child = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => child.once('exit', resolve));
    expect((await lstat(socketPath)).isSocket()).toBe(true);
    const server = await endpoint({ listen: { socketPath } });
    const client = await helloClient(server.address, 'after-crash');
    expect(server.connected()).toEqual([{ runtimeId: 'after-crash', digest: null }]);
    client.ws.close();
  });

  it('leaves an ordinary file at the socket path as it was', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'bridge.sock');
    await writeFile(socketPath, 'precious');
    await codeOf(startBridgeEndpoint({ listen: { socketPath }, token: TOKEN }));
    expect(await readFile(socketPath, 'utf8')).toBe('precious');
  });

  it('refuses with SOCKET_DIR_UNSAFE a socket in a directory others may write', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const shared = join(dir, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o777);
    expect(await codeOf(startBridgeEndpoint({ listen: { socketPath: join(shared, 'bridge.sock') }, token: TOKEN }))).toBe('SOCKET_DIR_UNSAFE');
    await chmod(shared, 0o770);
    expect(await codeOf(startBridgeEndpoint({ listen: { socketPath: join(shared, 'bridge.sock') }, token: TOKEN }))).toBe('SOCKET_DIR_UNSAFE');
    await chmod(shared, 0o700);
    const server = await endpoint({ listen: { socketPath: join(shared, 'bridge.sock') } });
    expect(server.address).toBe(join(shared, 'bridge.sock'));
  });

  it('refuses the socket of an endpoint that is still running, and listens there once it has closed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'resultity-endpoint-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'bridge.sock');
    const first = await endpoint({ listen: { socketPath } });
    expect(await codeOf(startBridgeEndpoint({ listen: { socketPath }, token: TOKEN }))).toBe('SOCKET_PATH_IN_USE');
    await first.close();
    const second = await endpoint({ listen: { socketPath } });
    expect(second.address).toBe(socketPath);
  });
});

describe('authentication', () => {
  it('refuses a client without a token or with a wrong one with 401 before any message', async () => {
    const server = await endpoint();
    expect(await rawClient(server.address, { token: null }).refused).toBe(401);
    expect(await rawClient(server.address, { token: 'wrong-token-0123456789abcdef' }).refused).toBe(401);
    expect(await rawClient(server.address, { token: `${TOKEN}x` }).refused).toBe(401);
    expect(server.stats().unauthorized).toBe(3);
    expect(server.stats().connections).toBe(0);
  });

  it('refuses a client that does not speak the bridge subprotocol with 400', async () => {
    const server = await endpoint();
    expect(await rawClient(server.address, { protocol: 'resultity.bridge.v0' }).refused).toBe(400);
  });
});

describe('setEnvironment', () => {
  it('sends the environment to a bridge and resolves with its ack', async () => {
    const server = await endpoint();
    const client = await helloClient(server.address, 'runtime-a');
    const env = sampleEnvironment(1);
    const acks = server.setEnvironment(env);
    const message = await client.next('environment');
    expect(message.environment).toEqual(env);
    client.send({ type: 'ack', nonce: message.nonce, digest: env.digest });
    expect(await acks).toEqual([{ runtimeId: 'runtime-a', digest: env.digest, ok: true }]);
    expect(server.connected()).toEqual([{ runtimeId: 'runtime-a', digest: env.digest }]);
  });

  it('resolves with the nack of a bridge that refuses, and reports it to ack listeners', async () => {
    const server = await endpoint();
    const seen: BridgeAck[] = [];
    server.on('ack', (ack) => seen.push(ack));
    const client = await helloClient(server.address, 'runtime-a');
    const env = sampleEnvironment(2);
    const acks = server.setEnvironment(env);
    const message = await client.next('environment');
    client.send({ type: 'nack', nonce: message.nonce, digest: env.digest, code: 'LISTENER_FAILED', message: 'model missing' });
    const expected = { runtimeId: 'runtime-a', digest: env.digest, ok: false, code: 'LISTENER_FAILED', message: 'model missing' };
    expect(await acks).toEqual([expected]);
    expect(seen).toEqual([expected]);
    expect(server.connected()[0]?.digest).toBeNull();
  });

  it('answers ACK_TIMEOUT for a bridge that never answers', async () => {
    const server = await endpoint({ ackTimeoutMs: 50 });
    await helloClient(server.address, 'silent');
    const [ack] = await server.setEnvironment(sampleEnvironment(3));
    expect(ack).toMatchObject({ runtimeId: 'silent', ok: false, code: 'ACK_TIMEOUT' });
  });

  it('counts an answer after the ACK timeout for nothing, and sends the previous environment again instead of taking it as still there', async () => {
    const server = await endpoint({ ackTimeoutMs: 100 });
    const client = await helloClient(server.address, 'slow');
    const old = sampleEnvironment(6);
    const oldAcks = server.setEnvironment(old);
    const first = await client.next('environment');
    client.send({ type: 'ack', nonce: first.nonce, digest: old.digest });
    expect((await oldAcks)[0]?.ok).toBe(true);

    const next = sampleEnvironment(7);
    expect((await server.setEnvironment(next))[0]).toMatchObject({ ok: false, code: 'ACK_TIMEOUT' });
    const timedOut = await client.next('environment');
    // The bridge took it after all and says so late: ignored, not an error, not an ack.
    client.send({ type: 'ack', nonce: timedOut.nonce, digest: next.digest });
    await until(() => server.stats().late === 1);
    expect(server.stats()).toMatchObject({ malformed: 0, acks: 1 });
    expect(client.received.filter((m) => m.type === 'error')).toEqual([]);
    expect(server.connected()[0]?.digest).toBeNull();

    // The rollback to the previous environment is sent and waited for, not answered ok at once.
    const rollback = server.setEnvironment(old);
    const resent = await client.next('environment');
    expect(resent).toMatchObject({ digest: old.digest });
    expect(resent.nonce).not.toBe(first.nonce);
    client.send({ type: 'ack', nonce: resent.nonce, digest: old.digest });
    expect((await rollback)[0]?.ok).toBe(true);
    expect(server.connected()[0]?.digest).toBe(old.digest);
  });

  it('refuses an environment that does not match the schema with ENVIRONMENT_INVALID and keeps the current one', async () => {
    const server = await endpoint();
    const env = sampleEnvironment(4);
    await server.setEnvironment(env);
    const broken = { ...env, digest: 'sha256:nope' };
    expect(await codeOf(server.setEnvironment(broken))).toBe('ENVIRONMENT_INVALID');
    expect(server.environment()).toEqual(env);
  });

  it('sends the current environment to a bridge that connects later, and not to one that already has it', async () => {
    const server = await endpoint();
    const env = sampleEnvironment(5);
    await server.setEnvironment(env);
    const acked = new Promise<BridgeAck>((resolve) => server.on('ack', resolve));

    const late = await helloClient(server.address, 'late', null);
    const message = await late.next('environment');
    late.send({ type: 'ack', nonce: message.nonce, digest: env.digest });
    expect(await acked).toEqual({ runtimeId: 'late', digest: env.digest, ok: true });

    const current = await helloClient(server.address, 'current', env.digest);
    const [first, second] = await server.setEnvironment(env);
    expect([first?.ok, second?.ok]).toEqual([true, true]);
    expect(current.received.filter((m) => m.type === 'environment')).toEqual([]);
  });
});

describe('misbehaving clients', () => {
  it('answers a malformed message with an error, counts it, and closes the client after too many', async () => {
    const server = await endpoint({ maxMalformed: 2 });
    const { client, opened: ready } = rawClient(server.address);
    await ready;
    client.send('{not json');
    expect(await client.next('error')).toMatchObject({ code: 'MALFORMED' });
    client.send({ type: 'ack', nonce: 'x', digest: `sha256:${'0'.repeat(64)}` });
    expect(await client.next('error')).toMatchObject({ code: 'HELLO_REQUIRED' });
    client.send({ type: 'launch' });
    expect(await client.next('error')).toMatchObject({ code: 'INVALID_MESSAGE' });
    expect((await client.closed).code).toBe(CLOSE_CODES.POLICY_VIOLATION);
    expect(server.stats().malformed).toBe(3);
  });

  it('closes a client whose frame is larger than the limit, and a good client keeps its environment', async () => {
    const server = await endpoint({ maxFrameBytes: 1024 });
    const good = await helloClient(server.address, 'good');
    const { client: big, opened: ready } = rawClient(server.address);
    await ready;
    big.send(JSON.stringify({ type: 'hello', runtimeId: 'big', digest: null, padding: 'x'.repeat(4096) }));
    expect((await big.closed).code).toBe(CLOSE_CODES.MESSAGE_TOO_BIG);
    expect(server.stats().oversized).toBe(1);

    const env = sampleEnvironment(6);
    const acks = server.setEnvironment(env);
    const message = await good.next('environment');
    good.send({ type: 'ack', nonce: message.nonce, digest: env.digest });
    expect(await acks).toEqual([{ runtimeId: 'good', digest: env.digest, ok: true }]);
  });

  it('closes a flooding client with a policy violation and leaves the others connected', async () => {
    const server = await endpoint({ messagesPerSecond: 10 });
    const good = await helloClient(server.address, 'good');
    const flood = await helloClient(server.address, 'flood');
    for (let i = 0; i < 200; i++) flood.send({ type: 'ping', id: i });
    const closed = await flood.closed;
    expect(closed.code).toBe(CLOSE_CODES.POLICY_VIOLATION);
    expect(closed.reason).toContain('rate limit');
    expect(server.stats().rateLimited).toBe(1);
    expect(server.connected().map((c) => c.runtimeId)).toEqual(['good']);
    good.send({ type: 'ping', id: 1 });
    expect(await good.next('pong')).toEqual({ type: 'pong', id: 1 });
  });

  it('does not count answers to its own environments against the rate limit', async () => {
    const server = await endpoint({ messagesPerSecond: 1 });
    const client = await helloClient(server.address, 'busy');
    for (let n = 10; n < 30; n++) {
      const env = sampleEnvironment(n);
      const acks = server.setEnvironment(env);
      const message = await client.next('environment');
      client.send({ type: 'ack', nonce: message.nonce, digest: env.digest });
      expect((await acks)[0]?.ok).toBe(true);
    }
    expect(server.stats()).toMatchObject({ rateLimited: 0, acks: 20 });
  });

  it('closes a client that never says hello', async () => {
    const server = await endpoint({ helloTimeoutMs: 50 });
    const { client, opened: ready } = rawClient(server.address);
    await ready;
    expect((await client.closed).code).toBe(CLOSE_CODES.HELLO_TIMEOUT);
  });

  it('closes a bridge that stops answering pings', async () => {
    const server = await endpoint({ pingIntervalMs: 30 });
    const client = await helloClient(server.address, 'deaf');
    expect(await client.next('ping')).toMatchObject({ type: 'ping' });
    expect((await client.closed).code).toBe(CLOSE_CODES.KEEPALIVE_TIMEOUT);
  });

  it('replaces the older connection when a runtime id says hello twice', async () => {
    const server = await endpoint();
    const old = await helloClient(server.address, 'same');
    await helloClient(server.address, 'same');
    expect((await old.closed).code).toBe(CLOSE_CODES.REPLACED);
    expect(server.connected()).toHaveLength(1);
  });
});
