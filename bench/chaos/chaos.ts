#!/usr/bin/env -S npx tsx
// Crash-consistency campaign: a real `resultity-agent run` daemon, a real Docker
// engine and registry, a real origin, model file server and runtime bridge; the daemon is
// killed with SIGKILL at points chosen by a seeded PRNG while it applies a rollout, then
// restarted, and the node is checked to run exactly the old or the new configuration.
//
//   pnpm chaos                          # 100 kills, fresh seed (printed)
//   pnpm chaos --kills 20 --seed 1234   # reproduce a run
//   pnpm chaos --soak 200               # no kills: rollouts in a row, RSS/fd figures and a plot
//   pnpm chaos --faults --seed 1234     # every fault (origin, runtime, engine, registry, disk full,
//                                       # read-only state directory, clock); --only REGEX picks some.
//                                       # Needs root (tmpfs mounts) and Debian's faketime package.
//
// Kill points are chosen from outside the product (nothing is compiled into the Agent):
//   delay : a uniform delay within the measured apply duration after journal.json appears,
//   audit : right after the n-th audit line of this apply is appended,
//   file  : as soon as a file of the apply appears or changes (journal, a model's staging
//           .part, the model index (the commit), last-known-good.json, state.json), or a
//           point of a chunked download: its staged .chunked file appears (range fetches in
//           flight), its .chunks journal records a verified chunk, records all of them (the
//           whole-file hash and the rename are next), or the blob lands in the store.
// The step in flight is read from the daemon's own debug log ("apply step") and the audit log.
// Later kill points (self-update hand-over, chunk commits) are one more entry of TRIGGERS.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { type IncomingMessage, type ServerResponse, createServer, request } from 'node:http';
import { type AddressInfo, type Socket, connect as netConnect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { startOriginServer } from '../../packages/snapshot/dist/origin/index.js';
import { type FileServer, createDevNetwork, devSnapshot, startFileServer } from '../../packages/testkit/src/devnet.ts';
import { log, seeded, sleep, until } from './campaign.ts';

const run = promisify(execFile);
const here = new URL('.', import.meta.url).pathname;
const CLI = join(here, '../../apps/agent/dist/cli.js');
const SNAPSHOT_CLI = join(here, '../../packages/snapshot/dist/cli.js');
// libfaketime moves the wall clock of the daemon alone (the clock fault); monotonic timers stay real.
const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';
const { connect } = (await import(join(here, '../../apps/runtime-bridge/dist/index.js'))) as typeof import('../../apps/runtime-bridge/src/index.js');

const { values: args } = parseArgs({
  options: {
    kills: { type: 'string', default: '100' },
    seed: { type: 'string' },
    soak: { type: 'string' },
    faults: { type: 'boolean', default: false },
    // Aim every kill at one point: delay, audit, or file:<journal|part|index|lkg|state>.
    only: { type: 'string' },
    keep: { type: 'boolean', default: false },
    // The Agent's retry_budget: high by default, since every runtime NACK spends one unit.
    'retry-budget': { type: 'string', default: '1000' },
    out: { type: 'string', default: join(here, 'results') },
  },
});
const SEED = args.seed === undefined ? randomBytes(4).readUInt32LE() : Number(args.seed);
// Per run, so that two campaigns (or a campaign and a soak) can share the engine.
const LABEL = `io.resultity.chaos${SEED}`;
// The run's own registry (a docker-registry on a free loopback port, storage in the run's
// directory): the registry fault can stop it, and nothing is left in a shared registry.
let REGISTRY = '';
let REPO = '';

const { random, pick } = seeded(SEED);

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

// ---------------------------------------------------------------- images -----------------------

/** Two FROM-scratch busybox images with distinct digests, pushed to the shared registry under our own repository. */
async function buildImages(work: string): Promise<{ tag: string; digest: string }[]> {
  const images = [];
  for (const tag of ['a', 'b']) {
    const context = join(work, `image-${tag}`);
    await mkdir(context, { recursive: true });
    await copyFile('/bin/busybox', join(context, 'busybox'));
    await writeFile(join(context, 'marker'), `chaos image ${tag}\n`);
    await writeFile(
      join(context, 'Dockerfile'),
      'FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\nLABEL resultity.chaos=1\nCMD ["/bin/busybox", "sleep", "3600"]\n',
    );
    await run('docker', ['build', '-q', '-t', `${REPO}:${tag}`, context], { timeout: 120_000 });
    await run('docker', ['push', `${REPO}:${tag}`], { timeout: 120_000 });
    const { stdout } = await run('docker', ['image', 'inspect', '--format', '{{json .RepoDigests}}', `${REPO}:${tag}`]);
    const digest = (JSON.parse(stdout) as string[]).find((d) => d.startsWith(`${REPO}@`))?.slice(REPO.length + 1);
    if (!digest) throw new Error(`no registry digest for ${REPO}:${tag}`);
    images.push({ tag, digest });
  }
  return images;
}

async function dockerJson(argv: string[]): Promise<unknown[]> {
  const { stdout } = await run('docker', argv, { timeout: 60_000 });
  return stdout.trim() === ''
    ? []
    : stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
}

// --------------------------------------------------------------- registry ----------------------

interface OwnRegistry {
  address: string;
  /** Kills the registry process: pulls from it are refused, as from a registry that went down. */
  stop(): Promise<void>;
  /** Starts it again on the same port and storage. */
  start(): Promise<void>;
}

async function freeLoopbackPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A docker-registry of the run's own (the engine treats loopback registries as insecure ones). */
async function startOwnRegistry(dir: string): Promise<OwnRegistry> {
  const port = await freeLoopbackPort();
  const address = `127.0.0.1:${port}`;
  await mkdir(join(dir, 'data'), { recursive: true });
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: ${address}\n`,
  );
  let child: ChildProcess | null = null;
  const stopSync = () => child?.kill('SIGKILL');
  process.on('exit', stopSync);
  const registry: OwnRegistry = {
    address,
    async start() {
      child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
      await until('the registry to answer', async () => (await fetch(`http://${address}/v2/`)).ok, 30_000);
    },
    async stop() {
      const running = child;
      if (running === null || running.exitCode !== null) return;
      const exited = new Promise((r) => running.once('exit', r));
      running.kill('SIGKILL');
      await exited;
      child = null;
    },
  };
  await registry.start();
  return registry;
}

// ------------------------------------------------------------- model files ---------------------

interface ModelEntry {
  name: string;
  version: string;
  sha256: string;
  size: number;
  urls: string[];
  chunks?: { size: number; sha256: string };
}

/**
 * Writes a model file for the file server (the testkit's, throttled so downloads last long enough
 * to be killed in) and returns its snapshot entry; a chunked one goes through `resultity-snapshot
 * model add` (1 MiB chunks), which also writes its chunk list into the origin.
 */
async function makeModelFile(dir: string, server: FileServer, originDir: string, version: string, content: Buffer, chunked: boolean): Promise<ModelEntry> {
  const file = `chaos-model-${version}.bin`;
  await writeFile(join(dir, file), content);
  const url = `${server.url}/${file}`;
  if (!chunked) return { name: 'chaos-model', version, sha256: createHash('sha256').update(content).digest('hex'), size: content.byteLength, urls: [url] };
  const { stdout } = await run(
    process.execPath,
    [
      SNAPSHOT_CLI,
      'model',
      'add',
      join(dir, file),
      '--name',
      'chaos-model',
      '--version',
      version,
      '--url',
      url,
      '--origin',
      originDir,
      '--network',
      'testnet',
      '--chunk-size',
      '1MiB',
    ],
    { timeout: 60_000 },
  );
  return JSON.parse(stdout) as ModelEntry;
}

// ------------------------------------------------------------- origin switch -------------------

/** What the origin proxy does to requests: pass them, or one of the faults the campaign injects. */
type OriginFault = 'none' | 'down' | '500' | '404' | 'timeout' | 'close-mid-body' | 'garbage' | 'oversized' | 'stale-latest' | 'missing-digest';

interface SwitchableOrigin {
  url: string;
  up: boolean;
  fault: OriginFault;
  /** The latest.json body served while the fault is 'stale-latest'. */
  stale: string | null;
  /** Times (ms) at which latest.json was asked for. */
  polls: number[];
  close(): Promise<void>;
}

/** A proxy in front of the dev origin that can be taken down (503) or made to misbehave. */
async function startSwitchableOrigin(target: string): Promise<SwitchableOrigin> {
  const state: SwitchableOrigin = { url: '', up: true, fault: 'none', stale: null, polls: [], close: async () => undefined };
  const upstream = new URL(target);
  const held = new Set<ServerResponse>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const latest = (req.url ?? '').includes('latest.json');
    if (latest) state.polls.push(Date.now());
    const fault = state.up ? state.fault : 'down';
    if (fault === 'down') return void res.writeHead(503).end();
    if (fault === '500') return void res.writeHead(500).end('internal error');
    if (fault === '404') return void res.writeHead(404).end();
    if (fault === 'timeout') {
      held.add(res);
      res.on('close', () => held.delete(res));
      return; // never answered: the Agent's request timeout must end it
    }
    if (fault === 'garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end(randomBytes(512));
    if (fault === 'oversized' && !latest) return void res.writeHead(200, { 'content-type': 'application/json' }).end(Buffer.alloc(256 * 1024, 0x7b));
    if (fault === 'stale-latest' && latest && state.stale !== null) return void res.writeHead(200, { 'content-type': 'application/json' }).end(state.stale);
    if (fault === 'missing-digest' && latest)
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ config_digest: `sha256:${'e'.repeat(64)}`, sequence: 1e6 }));
    const forward = request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      if (fault === 'close-mid-body') {
        const chunks: Buffer[] = [];
        answer.on('data', (c: Buffer) => chunks.push(c));
        answer.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(200, { 'content-length': String(body.byteLength), 'content-type': 'application/json' });
          res.write(body.subarray(0, body.byteLength >> 1));
          res.destroy(); // the connection closes with half the body sent
        });
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      for (const res of held) res.destroy();
      server.close(() => r());
    });
  return state;
}

/** A unix socket in front of the Docker engine that can be stopped and started, so the engine "goes away" for this Agent only. */
async function startEngineProxy(path: string): Promise<{ path: string; up: boolean; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { up: true };
  const server = createNetServer((client) => {
    if (!state.up) return void client.destroy();
    const engine = netConnect('/var/run/docker.sock');
    sockets.add(client);
    sockets.add(engine);
    client.on('close', () => sockets.delete(client));
    engine.on('close', () => sockets.delete(engine));
    client.on('error', () => engine.destroy());
    engine.on('error', () => client.destroy());
    client.pipe(engine).pipe(client);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    get up() {
      return state.up;
    },
    set up(v: boolean) {
      state.up = v;
      // Going down cuts what is in flight too, as a stopped engine would.
      if (!v) for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// ------------------------------------------------------------------ daemon ---------------------

interface Daemon {
  child: ChildProcess;
  /** The last "apply step" the daemon logged, and everything it printed. */
  lastStep: string | null;
  output: string[];
  /** When (harness clock, ms) the daemon logged each failed sync, and its code: one per attempt. */
  failures: { at: number; code: string }[];
}

function startDaemon(config: string, env: Record<string, string> = {}): Daemon {
  const child = spawn(process.execPath, [CLI, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const daemon: Daemon = { child, lastStep: null, output: [], failures: [] };
  let buffer = '';
  const onData = (d: Buffer) => {
    buffer += d.toString();
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      daemon.output.push(line);
      if (daemon.output.length > 400) daemon.output.shift();
      if (line.includes('"sync did not converge"')) {
        try {
          daemon.failures.push({ at: Date.now(), code: (JSON.parse(line) as { code: string }).code });
        } catch {}
      }
      if (line.includes('"apply step"')) {
        try {
          daemon.lastStep = (JSON.parse(line) as { step: string }).step;
        } catch {}
      }
      nl = buffer.indexOf('\n');
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return daemon;
}

async function kill(daemon: Daemon): Promise<void> {
  if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) return;
  const exited = new Promise((r) => daemon.child.once('exit', r));
  daemon.child.kill('SIGKILL');
  await exited;
}

async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...argv], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

// ------------------------------------------------------------------ checks ---------------------

interface Published {
  sequence: number;
  digest: string;
  image: { tag: string; digest: string };
  step: string;
  model: { name: string; version: string; sha256: string; chunked?: boolean };
  subclouds: string[];
  maxTokens: number;
}

interface StateFile {
  applied: { digest: string; sequence: number } | null;
  audit_head: { index: number; hash: string } | null;
}

async function readState(stateDir: string): Promise<StateFile | null> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as StateFile;
  } catch {
    return null;
  }
}

async function auditLines(stateDir: string): Promise<string[]> {
  const text = await readFile(join(stateDir, 'audit.jsonl'), 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '');
}

/** Every temporary or staging file the state directory may hold mid-write; none may outlive a converged node. */
async function leftovers(stateDir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (/\.tmp$|\.part$|\.partial$|\.chunked$|\.chunks$/.test(entry.name) || entry.name === 'journal.json') found.push(path.slice(stateDir.length + 1));
    }
  };
  await walk(stateDir);
  return found;
}

/**
 * The node runs exactly `expected`: state.json records its digest, one managed container runs
 * its image digest and env, the model store indexes exactly its model (blob present, right
 * hash), the flags the daemon reports are its subclouds, the audit chain verifies and its
 * head is the one state.json anchors, and no temporary or staging file is left.
 */
async function checkNode(
  stateDir: string,
  config: string,
  expected: Published,
  options: { runtime?: () => string | null; previous?: Published | undefined } = {},
): Promise<string[]> {
  const problems: string[] = [];
  const state = await readState(stateDir);
  if (state?.applied?.digest !== expected.digest) problems.push(`state.json records ${state?.applied?.digest ?? 'nothing'}, expected ${expected.digest}`);
  const containers = (await dockerJson(['ps', '-a', '--filter', `label=${LABEL}.managed-by`, '--format', '{{json .}}'])) as {
    ID: string;
    State: string;
    Names: string;
  }[];
  if (containers.length !== 1)
    problems.push(`expected 1 managed container, found ${containers.length}: ${containers.map((c) => `${c.Names}(${c.State})`).join(', ')}`);
  for (const c of containers) {
    // A container removed between the listing and here is a node still changing: report it, do not crash.
    const inspected = await run('docker', ['inspect', c.ID]).catch(() => ({ stdout: '[]' }));
    const [inspect] = JSON.parse(inspected.stdout) as { State: { Running: boolean }; Config: { Env: string[]; Labels: Record<string, string> } }[];
    if (!inspect?.State.Running) problems.push(`container ${c.Names} is not running (${c.State})`);
    const definition = JSON.parse(inspect?.Config.Labels[`${LABEL}.definition`] ?? '{}') as { digest?: string };
    if (definition.digest !== expected.image.digest) problems.push(`container ${c.Names} runs ${definition.digest}, expected ${expected.image.digest}`);
    if (!inspect?.Config.Env.includes(`CHAOS_STEP=${expected.step}`)) problems.push(`container ${c.Names} env is not step ${expected.step}`);
  }
  // The store holds the applied model, and may keep the one before it (retained for a rollback);
  // every blob is indexed (no orphan), every indexed blob is present and hashes to its name.
  const index = (
    JSON.parse(await readFile(join(stateDir, 'models', 'index.json'), 'utf8').catch(() => '{"models":[]}')) as {
      models: { name: string; version: string; sha256: string }[];
    }
  ).models;
  const allowed = new Set([expected.model.sha256, ...(options.previous ? [options.previous.model.sha256] : [])]);
  if (!index.some((m) => m.name === expected.model.name && m.version === expected.model.version && m.sha256 === expected.model.sha256)) {
    problems.push(`model index lacks ${expected.model.name}@${expected.model.version}`);
  }
  for (const m of index)
    if (!allowed.has(m.sha256)) problems.push(`model index holds ${m.name}@${m.version}, of neither this configuration nor the one before`);
  const blobs = await readdir(join(stateDir, 'models', 'sha256')).catch(() => [] as string[]);
  const indexed = new Set(index.map((m) => m.sha256));
  if (blobs.length !== indexed.size || blobs.some((b) => !indexed.has(b)))
    problems.push(`model blobs ${blobs.map((b) => b.slice(0, 8)).join(',')} are not the indexed ${[...indexed].map((b) => b.slice(0, 8)).join(',')}`);
  for (const blob of blobs) {
    const content = await readFile(join(stateDir, 'models', 'sha256', blob));
    if (createHash('sha256').update(content).digest('hex') !== blob) problems.push(`model blob ${blob.slice(0, 8)} does not hash to its name`);
  }
  const status = await cli(['status', '--config', config, '--json']);
  try {
    const report = JSON.parse(status.stdout) as { flags?: { subclouds: string[] } | null };
    if (JSON.stringify(report.flags?.subclouds ?? null) !== JSON.stringify(expected.subclouds))
      problems.push(`flags ${JSON.stringify(report.flags)} expected subclouds ${expected.subclouds}`);
  } catch {
    problems.push(`status --json did not answer JSON: ${status.stderr.slice(0, 200)}`);
  }
  const verify = await cli(['audit', 'verify', '--config', config]);
  if (verify.code !== 0) problems.push(`audit verify: ${verify.stderr.trim() || verify.stdout.trim()}`);
  // The daemon keeps appending (a failed check is audited) and anchors right after: compare a
  // log and a state.json read with no append in between.
  let head: { index: number; hash: string } | null = null;
  let anchored: unknown = null;
  for (let attempt = 0; attempt < 20; attempt++) {
    const before = await auditLines(stateDir);
    anchored = (await readState(stateDir))?.audit_head ?? null;
    const after = await auditLines(stateDir);
    const last = after.at(-1);
    head = last === undefined ? null : { index: (JSON.parse(last) as { seq: number }).seq, hash: createHash('sha256').update(last, 'utf8').digest('hex') };
    if (before.length === after.length && JSON.stringify(head) === JSON.stringify(anchored)) break;
    await sleep(50);
  }
  if (JSON.stringify(head) !== JSON.stringify(anchored)) problems.push(`audit head ${JSON.stringify(head)} is not state.json's ${JSON.stringify(anchored)}`);
  const left = await leftovers(stateDir);
  if (left.length > 0) problems.push(`left behind: ${left.join(', ')}`);
  if (options.runtime && options.runtime() !== expected.digest) problems.push(`runtime runs ${options.runtime()}, expected ${expected.digest}`);
  return problems;
}

// ------------------------------------------------------------------ campaign -------------------

const TRIGGERS = ['delay', 'delay', 'audit', 'file'] as const;
const FILES = ['journal', 'part', 'index', 'lkg', 'state', 'chunked', 'chunk', 'chunks-done', 'blob'] as const;
/** The points of a chunked download; a rollout that fetches a chunked model aims at one of them half of the time. */
const CHUNK_FILES = ['chunked', 'chunk', 'chunks-done', 'blob'] as const;

/** Whether a chunked download's journal (`<hex>.chunks`: header, then one bit per chunk) records `count` chunks verified. */
async function chunksVerified(stateDir: string, chunkCount: number, atLeast: number): Promise<boolean> {
  const staging = join(stateDir, 'models', 'staging');
  for (const name of await readdir(staging).catch(() => [] as string[])) {
    if (!name.endsWith('.chunks')) continue;
    const journal = await readFile(join(staging, name)).catch(() => null);
    if (journal === null || journal.byteLength < Math.ceil(chunkCount / 8)) continue;
    let bits = 0;
    for (const byte of journal.subarray(journal.byteLength - Math.ceil(chunkCount / 8))) for (let b = byte; b !== 0; b &= b - 1) bits++;
    if (bits >= atLeast) return true;
  }
  return false;
}

async function main(): Promise<void> {
  const soak = args.soak === undefined ? 0 : Number(args.soak);
  const kills = soak > 0 || args.faults ? 0 : Number(args.kills);
  log(`chaos: seed ${SEED}, ${soak > 0 ? `soak of ${soak} rollouts` : `${kills} kills`} (reproduce with --seed ${SEED})`);
  const work = await mkdtemp(join(tmpdir(), 'resultity-chaos-'));
  const stateDir = join(work, 'state');
  const clockFile = join(work, 'faketime');
  // The faults run the daemon on a tmpfs of its own (the disk-full and read-only faults resize
  // and remount it) and under libfaketime (the clock fault); the kills run it as it is.
  let daemonEnv: Record<string, string> = {};
  if (args.faults) {
    if (!(await exists(FAKETIME_LIB))) throw new Error(`the clock fault needs ${FAKETIME_LIB}: apt-get install -y faketime`);
    await mkdir(stateDir, { mode: 0o700 });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', stateDir]);
    process.on('exit', () => {
      try {
        execFileSync('umount', ['-l', stateDir], { stdio: 'ignore' });
      } catch {}
    });
    await writeFile(clockFile, '+0d\n');
    daemonEnv = { LD_PRELOAD: FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE: clockFile, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
  }
  const net = await createDevNetwork(join(work, 'net'), 'testnet');
  await mkdir(net.originDir, { recursive: true });
  const devOrigin = await startOriginServer({ dir: net.originDir });
  const origin = await startSwitchableOrigin(devOrigin.url);
  await mkdir(join(work, 'files'));
  // Throttled so a 1 MiB download takes about half a second (a chunked one: each of its 1 MiB
  // ranges, fetched side by side): long enough to be killed in.
  const files = await startFileServer(join(work, 'files'), 2 * 1024 * 1024);
  const registry = await startOwnRegistry(join(work, 'registry'));
  REGISTRY = registry.address;
  REPO = `${REGISTRY}/resultity-chaos/busybox-${SEED}`;
  const images = await buildImages(work);
  // The Agent reaches the engine through a proxy that the faults can stop; the shared engine is never touched.
  const engine = await startEngineProxy(join(work, 'engine.sock'));
  // A plain 1 MiB model (one stream into staging/*.part) and a chunked 4 MiB one (four 1 MiB
  // chunks into staging/*.chunked, journal *.chunks), alternating every third rollout.
  const CHUNKS = 4;
  let modelVersion = 0;
  const newModel = async (chunked: boolean) =>
    makeModelFile(join(work, 'files'), files, net.originDir, String(++modelVersion), randomBytes((chunked ? CHUNKS : 1) * 1024 * 1024), chunked);
  const models = [await newModel(false), await newModel(true)];
  const config = join(work, 'agent.json');
  await writeFile(
    config,
    JSON.stringify({
      network: 'testnet',
      origin: origin.url,
      node_id: 'chaos-node',
      trust_root: [net.rootFile],
      state_dir: stateDir,
      allowed_registries: [REGISTRY],
      bridge: { enabled: true, ack_timeout_ms: 5000 },
      status: { listen: null },
      docker: { socket_path: engine.path },
      // Its own label namespace and names: the chaos Agent must never take other runs' containers for its own.
      containers: { label_prefix: LABEL, name_prefix: `rchaos${SEED}` },
      downloads: { allow_private_addresses: true },
      limits: { max_snapshot_bytes: 64 * 1024, request_timeout_ms: 5000 },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 60, retry_initial_ms: 100, retry_max_ms: 1000, jitter: 0 },
      retry_budget: Number(args['retry-budget']),
      log_level: 'debug',
    }),
  );

  let sequence = 0;
  const bySequence = new Map<number, Published>();
  const previousOf = (p: Published) => bySequence.get(p.sequence - 1);
  /** Publishes the next snapshot of the cycle; a fault may name the image or model it needs instead. */
  const publish = async (force: { image?: { tag: string; digest: string }; model?: ModelEntry } = {}): Promise<Published> => {
    sequence++;
    const image = force.image ?? (images[Math.floor(sequence / 2) % 2] as { tag: string; digest: string });
    const model = force.model ?? (models[Math.floor(sequence / 3) % 2] as ModelEntry);
    const subclouds = sequence % 2 === 0 ? ['dev'] : ['dev', 'eu'];
    const maxTokens = 1000 + sequence;
    const snapshot = devSnapshot({
      network: 'testnet',
      sequence,
      models: [model],
      maxTokens,
      pollSeconds: 1,
      containers: [
        {
          name: 'chaos',
          image: REPO,
          tag: image.tag,
          digest: image.digest,
          env: { CHAOS_STEP: String(sequence) },
          // busybox as PID 1 ignores SIGTERM; the trap makes a stop take at most a second.
          command: ['/bin/busybox', 'sh', '-c', 'trap "exit 0" TERM; while :; do /bin/busybox sleep 1; done'],
          ports: [],
          restart: 'no',
        },
      ],
      extra: { participation: { mode: 'testnet', subclouds: subclouds.map((id) => ({ id, require: {} })) } },
    });
    const { digest } = await net.publish(snapshot);
    const published = {
      sequence,
      digest,
      image,
      step: String(sequence),
      model: { name: model.name, version: model.version, sha256: model.sha256, chunked: model.chunks !== undefined },
      subclouds,
      maxTokens,
    };
    bySequence.set(sequence, published);
    return published;
  };

  const runtimeState: { digest: string | null; envs: number; fault: 'none' | 'nack' | 'late' | 'silent'; cleared: () => void } = {
    digest: null,
    envs: 0,
    fault: 'none',
    cleared: () => undefined,
  };
  let daemon = startDaemon(config, daemonEnv);
  await until('the bridge socket', () => exists(join(stateDir, 'run', 'bridge.sock')), 30_000);
  const bridge = connect({
    url: join(stateDir, 'run', 'bridge.sock'),
    tokenFile: join(stateDir, 'run', 'bridge.token'),
    runtimeId: 'chaos-runtime',
    backoff: { initialMs: 50, maxMs: 500 },
    // The runtime's faults: refuse (NACK), answer after the Agent's ACK timeout, or not at all until the fault clears.
    check: async () => {
      if (runtimeState.fault === 'nack') throw new Error('chaos: this runtime refuses the environment');
      if (runtimeState.fault === 'late') await sleep(7000);
      if (runtimeState.fault === 'silent') await new Promise<void>((r) => (runtimeState.cleared = r));
    },
    onChange: (env) => {
      runtimeState.digest = env.digest;
      runtimeState.envs++;
    },
  });
  bridge.catch((error: unknown) => log(`runtime bridge: ${String(error)}`));

  const converge = async (to: Published, ms = 90_000) => {
    await until(
      `the node to converge on sequence ${to.sequence}`,
      async () => (await readState(stateDir))?.applied?.digest === to.digest && !(await exists(join(stateDir, 'journal.json'))),
      ms,
    );
    await until(`the runtime to be told of sequence ${to.sequence}`, async () => runtimeState.digest === to.digest, 30_000);
  };

  const results: Record<string, unknown>[] = [];
  let current = await publish();
  const t0 = Date.now();
  await converge(current);
  let applyMs = Date.now() - t0;
  let auditPerApply = 6;
  log(`first apply in ${applyMs} ms; check: ${(await checkNode(stateDir, config, current, { previous: previousOf(current) })).join('; ') || 'ok'}`);

  // Measure one ordinary rollout: its duration bounds the random delays, its audit lines the counts.
  {
    const before = (await auditLines(stateDir)).length;
    const next = await publish();
    const journal = until('the journal', () => exists(join(stateDir, 'journal.json')), 30_000, 5);
    await journal;
    const started = Date.now();
    await converge(next);
    applyMs = Date.now() - started;
    auditPerApply = (await auditLines(stateDir)).length - before;
    current = next;
    log(`measured apply: ${applyMs} ms, ${auditPerApply} audit lines`);
  }

  const fdsOf = async (pid: number) => (await readdir(`/proc/${pid}/fd`)).length;
  const rssOf = async (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;

  if (soak > 0) {
    const samples: { n: number; rss: number; fds: number; ms: number }[] = [];
    const pid = daemon.child.pid as number;
    for (let n = 1; n <= soak; n++) {
      const started = Date.now();
      const next = await publish();
      await converge(next);
      current = next;
      if (n % 10 === 0 || n === 1) {
        const sample = { n, rss: await rssOf(pid), fds: await fdsOf(pid), ms: Date.now() - started };
        samples.push(sample);
        log(`soak ${n}/${soak}: rss ${(sample.rss / 1048576).toFixed(1)} MiB, fds ${sample.fds}`);
      }
      if (n % 50 === 0) {
        const problems = await checkNode(stateDir, config, current, { runtime: () => runtimeState.digest, previous: previousOf(current) });
        if (problems.length > 0) throw new Error(`soak ${n}: ${problems.join('; ')}`);
      }
    }
    const problems = await checkNode(stateDir, config, current, { runtime: () => runtimeState.digest, previous: previousOf(current) });
    await mkdir(args.out, { recursive: true });
    await writeFile(join(args.out, 'soak.json'), `${JSON.stringify({ seed: SEED, rollouts: soak, samples, final: problems }, null, 1)}\n`);
    log(`soak done: ${problems.join('; ') || 'node on the last configuration, no leftovers'}`);
  }

  if (args.faults) {
    // Each fault: the Agent stays up, keeps the last good configuration while the fault lasts,
    // retries no faster than the snapshot's retry_initial_ms and no slower than its retry_max_ms
    // (plus the request timeout, for a request that hangs), and converges once the fault clears.
    const RETRY_MAX_MS = 2000; // devSnapshot's ttl.retry_max_ms
    const REQUEST_TIMEOUT_MS = 5000;
    const report: Record<string, unknown>[] = [];
    const remount = (options: string) => execFileSync('mount', ['-o', `remount,${options}`, stateDir]);
    const setClock = (offset: string) => writeFile(clockFile, `${offset}\n`);
    interface FaultCase {
      name: string;
      /** Runs before the snapshot is published; may say what it must change. */
      before?: () => Promise<Parameters<typeof publish>[0] | undefined>;
      during: () => Promise<void> | void;
      clear: () => Promise<void> | void;
      window: number;
      /** Attempts are the origin's latest.json polls (origin faults) or the daemon's failed syncs (the rest). */
      origin?: boolean;
      /** What the daemon must report during the fault, besides keeping the last good configuration. */
      reports?: (status: string) => string | null;
    }
    const cases: FaultCase[] = [
      ...(['500', '404', 'timeout', 'close-mid-body', 'garbage', 'oversized', 'missing-digest'] as const).map((fault) => ({
        name: `origin ${fault}`,
        during: () => {
          origin.fault = fault;
        },
        clear: () => {
          origin.fault = 'none';
        },
        window: fault === 'timeout' ? 16_000 : 8000,
        origin: true,
      })),
      {
        name: 'origin stale latest.json',
        during: async () => {
          origin.stale = await readFile(join(net.originDir, 'v1', 'testnet', 'latest.json'), 'utf8');
          origin.fault = 'stale-latest';
        },
        clear: () => {
          origin.fault = 'none';
        },
        window: 6000,
        // Nothing fails here (the Agent sees no news): its pace is its polls.
        origin: true,
      },
      ...(['nack', 'late', 'silent'] as const).map((fault) => ({
        name: `runtime ${fault}`,
        during: () => {
          runtimeState.fault = fault;
        },
        clear: () => {
          runtimeState.fault = 'none';
          runtimeState.cleared();
        },
        // Apply, the ACK timeout (5 s) and the restore all fit in it, even on a loaded machine.
        window: 25_000,
      })),
      {
        name: 'docker engine unreachable mid-apply',
        during: async () => {
          await until('the journal', () => exists(join(stateDir, 'journal.json')), 20_000, 5);
          engine.up = false;
        },
        clear: () => {
          engine.up = true;
        },
        window: 10_000,
      },
      {
        // The new image is not on the engine, so the apply must pull it; the registry process is
        // killed as the apply starts (the journal appears) and started again to clear.
        name: 'registry down mid-apply (image pull)',
        before: async () => {
          const image = images.find((i) => i.digest !== current.image.digest) as (typeof images)[number];
          await run('docker', ['rmi', `${REPO}:${image.tag}`, `${REPO}@${image.digest}`]).catch(() => undefined);
          return { image };
        },
        during: async () => {
          await until('the journal', () => exists(join(stateDir, 'journal.json')), 20_000, 2);
          await registry.stop();
        },
        clear: () => registry.start(),
        window: 12_000,
      },
      {
        // The state directory's tmpfs is shrunk to what it holds plus 256 KiB, then a snapshot
        // with a new 4 MiB chunked model is published: the download runs out of space.
        name: 'disk full during a model download',
        before: async () => {
          const model = await newModel(true);
          const fs = await statfs(stateDir);
          const usedKiB = Math.ceil(((fs.blocks - fs.bfree) * fs.bsize) / 1024);
          remount(`size=${usedKiB + 256}k`);
          return { model };
        },
        during: () => undefined,
        clear: () => remount('size=64m'),
        window: 12_000,
      },
      {
        name: 'state directory read-only',
        during: () => remount('ro'),
        clear: () => remount('rw'),
        window: 10_000,
      },
      {
        // The daemon's wall clock jumps 30 days ahead, past the new snapshot's expires_at (7
        // days); the snapshot is published; then the clock comes back.
        name: 'clock past expires_at and back',
        before: async () => {
          await setClock('+30d');
          return undefined;
        },
        during: () => undefined,
        clear: () => setClock('+0d'),
        window: 10_000,
        origin: true,
        reports: (status) => (status.includes('EXPIRED') ? null : `status does not report the expired snapshot: ${status.slice(0, 300)}`),
      },
    ];
    const only = args.only === undefined ? null : new RegExp(args.only);
    for (const c of cases) {
      if (only !== null && !only.test(c.name)) continue;
      const old = current;
      const pid = daemon.child.pid;
      const auditBase = (await auditLines(stateDir)).length;
      // The stale latest.json is the one before this publication: take it first.
      if (c.name === 'origin stale latest.json') await c.during();
      const force = (await c.before?.()) ?? {};
      origin.polls = [];
      daemon.failures = [];
      const next = await publish(force);
      const startedAt = Date.now();
      if (c.name !== 'origin stale latest.json') await c.during();
      await sleep(Math.max(0, c.window - (Date.now() - startedAt)));
      const problems: string[] = [];
      const attempts = c.origin ? origin.polls : daemon.failures.map((f) => f.at);
      const codes = [...new Set(daemon.failures.map((f) => f.code))];
      if (c.reports) {
        const problem = c.reports((await cli(['status', '--config', config, '--json'])).stdout);
        if (problem !== null) problems.push(`during: ${problem}`);
      }
      if (daemon.child.exitCode !== null || daemon.child.pid !== pid) problems.push('the daemon did not stay up');
      const during = (await readState(stateDir))?.applied?.digest;
      if (during !== old.digest) problems.push(`during the fault the node recorded ${during}, expected the last good ${old.digest}`);
      // Old containers and models stay, whatever the fault (the engine proxy being down hides them from the check itself).
      if (c.name.startsWith('docker')) engine.up = true;
      const retried = c.name.startsWith('docker') || c.name.startsWith('registry') || c.name.startsWith('disk');
      // A runtime that refuses makes the Agent try, roll back and try again (each attempt spends
      // retry budget): the node passes through the new configuration on every attempt, so
      // what must hold is the record (checked above) and the rollbacks, not a still picture.
      const held = c.name.startsWith('runtime')
        ? (await auditLines(stateDir))
            .slice(auditBase)
            .some((l) => l.includes('"type":"rollback"') && l.includes('"reason":"runtime-nack"') && l.includes(old.digest))
          ? []
          : ['no rollback after the runtime refused']
        : (await checkNode(stateDir, config, old, { previous: previousOf(old) })).filter(
            // With the engine, the registry or the disk gone the Agent keeps retrying the apply
            // (the failures are retryable): a journal, the staged download it resumes and an
            // unanchored append are that retry in flight, not a loss. Everything else must hold.
            (p) =>
              !(
                retried &&
                ((p.startsWith('left behind: ') &&
                  p
                    .slice('left behind: '.length)
                    .split(', ')
                    .every((f) => f === 'journal.json' || f.startsWith('models/staging/'))) ||
                  p.startsWith('audit head'))
              ),
          );
      if (c.name.startsWith('docker')) engine.up = false;
      problems.push(...held.map((p) => `during: ${p}`));
      const gaps = attempts.slice(1).map((t, i) => t - (attempts[i] as number));
      const maxGap = gaps.length > 0 ? Math.max(...gaps) : null;
      const minGap = gaps.length > 0 ? Math.min(...gaps) : null;
      // Runtime faults are judged by their rollbacks (above); every other fault by its attempts.
      const paced = !c.name.startsWith('runtime');
      if (paced && maxGap !== null && maxGap > RETRY_MAX_MS * 1.1 + REQUEST_TIMEOUT_MS + 500)
        problems.push(`a retry waited ${maxGap} ms, beyond retry_max_ms ${RETRY_MAX_MS} and the request timeout`);
      if (paced && attempts.length < 2) problems.push(`only ${attempts.length} attempts during the fault`);
      await c.clear();
      try {
        await converge(next, 60_000);
        problems.push(
          ...(await checkNode(stateDir, config, next, { runtime: () => runtimeState.digest, previous: previousOf(next) })).map((p) => `after: ${p}`),
        );
      } catch (error) {
        problems.push(`after: ${(error as Error).message}`);
      }
      current = next;
      const row = {
        fault: c.name,
        ok: problems.length === 0,
        attempts: attempts.length,
        counted: c.origin ? 'origin polls' : 'failed syncs',
        codes,
        min_gap_ms: minGap,
        max_gap_ms: maxGap,
        problems,
      };
      report.push(row);
      log(
        `fault ${c.name}: ${attempts.length} ${row.counted} (${codes.join(',') || '-'}), gaps ${minGap ?? '-'}..${maxGap ?? '-'} ms, ${row.ok ? 'ok' : `FAILED: ${problems.join('; ')}`}`,
      );
    }
    await mkdir(args.out, { recursive: true });
    await writeFile(join(args.out, `faults-${SEED}${only === null ? '' : '-only'}.json`), `${JSON.stringify({ seed: SEED, report }, null, 1)}\n`);
    log(`faults: ${report.filter((r) => r.ok).length}/${report.length} passed`);
  }

  const stepsSeen: Record<string, number> = {};
  let passed = 0;
  for (let k = 1; k <= kills; k++) {
    const old = current;
    const [onlyTrigger, onlyFile] = (args.only ?? '').split(':') as [(typeof TRIGGERS)[number] | '', (typeof FILES)[number] | undefined];
    let trigger = pick(TRIGGERS);
    let fileTarget = pick(FILES);
    if (onlyTrigger !== '') {
      // The draws above still happen, so --only does not change the rest of a seed's sequence.
      trigger = onlyTrigger;
      if (onlyFile !== undefined) fileTarget = onlyFile;
    }
    const n = 1 + Math.floor(random() * auditPerApply);
    const delay = Math.floor(random() * applyMs);
    const baseLines = (await auditLines(stateDir)).length;
    const stateMtime = (await stat(join(stateDir, 'state.json'))).mtimeMs;
    const lkgMtime = (await stat(join(stateDir, 'last-known-good.json')).catch(() => ({ mtimeMs: 0 }))).mtimeMs;
    const indexMtime = (await stat(join(stateDir, 'models', 'index.json')).catch(() => ({ mtimeMs: 0 }))).mtimeMs;
    const chunkTarget = pick(CHUNK_FILES);
    const aimAtChunks = random() < 0.5;
    daemon.lastStep = null;
    const next = await publish();
    // A rollout that fetches a chunked model is killed at one of its download's points half of
    // the time (the draws above happen on every trial, so a seed's sequence does not depend on it).
    const fetchesChunked = next.model.chunked === true && next.model.sha256 !== old.model.sha256;
    if (onlyTrigger === '' && fetchesChunked && aimAtChunks) {
      trigger = 'file';
      fileTarget = chunkTarget;
    }
    // A chunk point on a rollout without a chunked download would only wait out the apply: a delay instead.
    if (onlyTrigger === '' && trigger === 'file' && !fetchesChunked && (CHUNK_FILES as readonly string[]).includes(fileTarget)) trigger = 'delay';
    const point = trigger === 'delay' ? `delay ${delay}ms` : trigger === 'audit' ? `audit line ${n}` : `file ${fileTarget}`;
    // A blob already in the store (a rollout that keeps its model) is no commit to be killed in.
    const blobBefore = await exists(join(stateDir, 'models', 'sha256', next.model.sha256));
    let fired = true;
    try {
      if (trigger === 'delay') {
        await until('the journal', () => exists(join(stateDir, 'journal.json')), 20_000, 5);
        await sleep(delay);
      } else if (trigger === 'audit') {
        await until(`audit line ${n}`, async () => (await auditLines(stateDir)).length >= baseLines + n, 20_000, 5);
      } else {
        const probe = {
          journal: () => exists(join(stateDir, 'journal.json')),
          part: async () => (await readdir(join(stateDir, 'models', 'staging')).catch(() => [] as string[])).some((f) => f.endsWith('.part')),
          // The model store's commit: activate-model rewrites index.json.
          index: async () => (await stat(join(stateDir, 'models', 'index.json')).catch(() => ({ mtimeMs: 0 }))).mtimeMs !== indexMtime,
          lkg: async () => (await stat(join(stateDir, 'last-known-good.json')).catch(() => ({ mtimeMs: 0 }))).mtimeMs !== lkgMtime,
          state: async () => (await stat(join(stateDir, 'state.json'))).mtimeMs !== stateMtime,
          // A chunked download: its staged file exists (range fetches in flight), its journal
          // records a verified chunk, records all of them (whole-file hash, then the rename),
          // or its blob has landed in the store (before the index names it).
          chunked: async () => (await readdir(join(stateDir, 'models', 'staging')).catch(() => [] as string[])).some((f) => f.endsWith('.chunked')),
          chunk: () => chunksVerified(stateDir, CHUNKS, 1),
          'chunks-done': () => chunksVerified(stateDir, CHUNKS, CHUNKS),
          blob: async () => !blobBefore && (await exists(join(stateDir, 'models', 'sha256', next.model.sha256))),
        }[fileTarget];
        await until(`file ${fileTarget}`, probe, 20_000, 3);
      }
    } catch {
      fired = false; // the apply ended before the point: the kill lands after it
    }
    const lastAudit = (await auditLines(stateDir)).at(-1);
    const stepAtKill = daemon.lastStep;
    const auditAtKill = lastAudit ? (JSON.parse(lastAudit) as { type: string }).type : null;
    const journalAtKill = await exists(join(stateDir, 'journal.json'));
    await kill(daemon);
    const where = journalAtKill ? `${auditAtKill}${stepAtKill ? `/${stepAtKill}` : ''}` : `after:${auditAtKill}`;
    stepsSeen[where] = (stepsSeen[where] ?? 0) + 1;

    // Recovery with the origin down: the node must settle on old or new from its own state.
    origin.up = false;
    daemon = startDaemon(config, daemonEnv);
    let recovered: Published | null = null;
    let problems: string[] = [];
    // A chunked download needs its chunk list from the origin, which is down during recovery:
    // the node then goes back to the old configuration and keeps the new model's verified chunks
    // (staging/<new sha256>.chunked and .chunks) for the retry, as a failed apply does. Those, and
    // only those, may be there while the node is on the old configuration; at convergence nothing may.
    let keptForResume = false;
    const resumable = (on: Published, problem: string) =>
      on === old &&
      problem.startsWith('left behind: ') &&
      problem
        .slice('left behind: '.length)
        .split(', ')
        .every((f) => f.startsWith(`models/staging/${next.model.sha256}.`));
    try {
      recovered = await until(
        'recovery to settle on the old or the new configuration',
        async () => {
          const s = await readState(stateDir);
          if (await exists(join(stateDir, 'journal.json'))) return null;
          const on = s?.applied?.digest === next.digest ? next : s?.applied?.digest === old.digest ? old : null;
          if (on === null) return null;
          // Cheap signs of a settled node first; the full check (CLI calls) only then.
          const running = (await dockerJson(['ps', '--filter', `label=${LABEL}.managed-by`, '--format', '{{json .}}'])).length;
          if (running !== 1) return null;
          const p = (await checkNode(stateDir, config, on, { previous: previousOf(on) })).filter((problem) => !resumable(on, problem));
          if (p.length === 0 && on === old) keptForResume = (await leftovers(stateDir)).length > 0;
          return p.length === 0 ? on : null;
        },
        30_000,
        200,
      );
    } catch (error) {
      const s = await readState(stateDir);
      const on = s?.applied?.digest === next.digest ? next : old;
      problems = [
        `recovery: ${(error as Error).message}`,
        ...(await checkNode(stateDir, config, on, { previous: previousOf(on) })).filter((problem) => !resumable(on, problem)),
      ];
    }
    // Convergence once the origin is back: the new configuration, runtime told, nothing left over.
    origin.up = true;
    if (problems.length === 0) {
      try {
        await converge(next);
        problems = await checkNode(stateDir, config, next, { runtime: () => runtimeState.digest, previous: previousOf(next) });
      } catch (error) {
        problems = [`convergence: ${(error as Error).message}`, ...(await checkNode(stateDir, config, next, { previous: previousOf(next) }))];
      }
    }
    if (daemon.child.exitCode !== null) problems.push(`daemon exited ${daemon.child.exitCode}: ${daemon.output.slice(-5).join(' | ')}`);
    const ok = problems.length === 0;
    if (ok) passed++;
    const result = {
      kill: k,
      point,
      fired,
      at: where,
      recovered_to: recovered === null ? null : recovered === next ? 'new' : 'old',
      kept_for_resume: keptForResume,
      ok,
      problems,
    };
    results.push(result);
    log(
      `kill ${k}/${kills} [${point}${fired ? '' : ', after the apply'}] at ${where}: recovered to ${result.recovered_to ?? '?'}, ${ok ? 'ok' : `FAILED: ${problems.join('; ')}`}`,
    );
    if (!ok) {
      await mkdir(args.out, { recursive: true });
      await writeFile(join(args.out, `failure-${SEED}-${k}.log`), `${JSON.stringify(result, null, 1)}\n--- daemon output ---\n${daemon.output.join('\n')}\n`);
      // Put the node back on its feet for the next trial, so one failure is not counted many times.
      await converge(next).catch(() => undefined);
    }
    current = next;
    // The image no longer used is removed, so the next switch pulls it again.
    const unused = images.find((i) => i.digest !== current.image.digest);
    if (unused) await run('docker', ['rmi', `${REPO}:${unused.tag}`, `${REPO}@${unused.digest}`]).catch(() => undefined);
  }

  if (kills > 0) {
    await mkdir(args.out, { recursive: true });
    const summary = {
      seed: SEED,
      kills,
      passed,
      apply_ms: applyMs,
      audit_lines_per_apply: auditPerApply,
      recovered_to_old_keeping_chunks: results.filter((r) => r.kept_for_resume === true).length,
      at: stepsSeen,
      results,
    };
    await writeFile(join(args.out, `chaos-${SEED}.json`), `${JSON.stringify(summary, null, 1)}\n`);
    log(`chaos: seed ${SEED}: ${passed}/${kills} passed`);
    log(`kill points (audit entry / step in flight): ${JSON.stringify(stepsSeen)}`);
  }

  await kill(daemon);
  (await bridge.catch(() => null))?.close();
  // Clean up what this run created: its containers (by our label), its images, its files.
  const ours = (await dockerJson(['ps', '-a', '--filter', `label=${LABEL}.managed-by`, '--format', '{{json .}}'])) as { ID: string }[];
  if (ours.length > 0) await run('docker', ['rm', '-f', ...ours.map((c) => c.ID)]).catch(() => undefined);
  // The Agent pulled by digest (untagged); every image of our repository goes, by id.
  const ids = (await run('docker', ['images', '-q', REPO]).catch(() => ({ stdout: '' }))).stdout.split('\n').filter((id) => id !== '');
  if (ids.length > 0) await run('docker', ['rmi', '-f', ...new Set(ids)]).catch(() => undefined);
  await files.close();
  // The run's registry goes with the run's directory: no image of this run outlives it.
  await registry.stop();
  if (args.faults) execFileSync('umount', [stateDir]);
  await engine.close();
  await origin.close();
  await devOrigin.close();
  if (!args.keep) await rm(work, { recursive: true, force: true });
  process.exitCode = kills > 0 && passed !== kills ? 1 : 0;
}

await main();
