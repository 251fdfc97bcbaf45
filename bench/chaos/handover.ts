#!/usr/bin/env -S npx tsx
// Kill campaign for the Agent's self-update hand-over: the Agent image runs with the documented
// run line (`--restart always`, host network, the engine's socket, the state directory), a
// snapshot names another build in `updates.agent`, and one of the two Agents (the predecessor
// or the successor) is killed with SIGKILL from the host (`kill -9` of its pid: unlike `docker
// kill`, the restart policy applies) at a step of the hand-over drawn from a seeded PRNG:
//
//   pull                 : 0-300 ms after the snapshot that names the update is applied,
//   standby-start        : as soon as the standby container exists,
//   standby-check        : 0-2 s into the standby run,
//   lock-release         : as soon as `agent-handover` is audited (the record written, the lock released next),
//   lock-take            : as soon as the lock file names a container other than the predecessor,
//   confirmation         : 0-1.5 s after `agent-takeover` (before or around the first sync),
//   predecessor-removal  : as soon as the hand-over's outcome file exists (confirmed: removal next).
//
// Then the restart policies act, and with no operator step the node must settle: no hand-over
// record, exactly one Agent container, running, holding the lock, applying (a probe snapshot
// gets applied), the audit chain intact (`resultity-agent audit verify`). Meanwhile the lock
// file is sampled (inotify plus a 10 ms poll): every holder must be one of the campaign's
// Agent containers, and a change of holder is checked against the engine: the previous
// holder's container is gone or restarted, or it is the predecessor that had audited
// `agent-handover` (idle from then on). Every build is a fresh digest (v1 → v2 → v3 ...), so
// a reverted one is not retried (retry budget 1).
//
// With --broken F, a share F of the builds passes standby and takes over but then cannot sync
// and exits 5 s after every start: the node must end on the build before it.
//
//   pnpm --filter @resultity/bench run chaos:handover -- --kills 20 --seed 7 [--broken 0.5] [--only confirmation:predecessor]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { startOriginServer } from '../../packages/snapshot/dist/origin/index.js';
import { agentRunArgs, brokenAgentEntry, deriveImage } from '../../packages/testkit/src/agent-builds.ts';
import { createDevNetwork, devSnapshot, writeAgentConfig } from '../../packages/testkit/src/devnet.ts';
import { log, seeded, sleep, until } from './campaign.ts';

const run = promisify(execFile);
const here = new URL('.', import.meta.url).pathname;
const CLI = join(here, '../../apps/agent/dist/cli.js');

const { values: args } = parseArgs({
  // `pnpm run chaos:handover -- --kills N` passes the `--` through.
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    kills: { type: 'string', default: '20' },
    seed: { type: 'string' },
    // Aim every kill at one step (and optionally one victim: step:predecessor).
    only: { type: 'string' },
    // The share of trials whose build passes standby, takes over, then cannot sync and exits after 5 s (a crash loop).
    broken: { type: 'string', default: '0' },
    out: { type: 'string', default: join(here, 'results') },
  },
});
const SEED = args.seed === undefined ? randomBytes(4).readUInt32LE() : Number(args.seed);
const KILLS = Number(args.kills);
const REGISTRY = '127.0.0.1:5000';
const NAME = `resultity-hochaos-${SEED}`;
const TIMEOUT_MS = 15_000;

const STEPS = ['pull', 'standby-start', 'standby-check', 'lock-release', 'lock-take', 'confirmation', 'predecessor-removal'] as const;
type Step = (typeof STEPS)[number];
type Victim = 'predecessor' | 'successor';
/** Steps before the successor exists can only kill the predecessor. */
const VICTIMS: Record<Step, readonly Victim[]> = {
  pull: ['predecessor'],
  'standby-start': ['predecessor'],
  'standby-check': ['predecessor'],
  'lock-release': ['predecessor', 'successor'],
  'lock-take': ['predecessor', 'successor'],
  confirmation: ['predecessor', 'successor'],
  'predecessor-removal': ['predecessor', 'successor'],
};

const { random, pick } = seeded(SEED);

async function docker(...argv: string[]): Promise<string> {
  return (await run('docker', argv, { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 })).stdout.trim();
}

interface AuditLine {
  seq: number;
  type: string;
  [key: string]: unknown;
}

async function auditEntries(stateDir: string): Promise<AuditLine[]> {
  const text = await readFile(join(stateDir, 'audit.jsonl'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as AuditLine];
      } catch {
        return [];
      }
    });
}

interface Holder {
  container?: string;
  pid: number;
  nonce: string;
}

async function lockHolder(stateDir: string): Promise<Holder | null> {
  const text = await readFile(join(stateDir, 'agent.lock'), 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    return JSON.parse(text) as Holder;
  } catch {
    return null;
  }
}

interface ContainerState {
  id: string;
  name: string;
  running: boolean;
  restarting: boolean;
  restartCount: number;
  pid: number;
  startedAt: string;
}

async function inspect(id: string): Promise<ContainerState | null> {
  try {
    const [info] = JSON.parse(await docker('inspect', id)) as {
      Id: string;
      Name: string;
      RestartCount: number;
      State: { Running: boolean; Restarting: boolean; Pid: number; StartedAt: string };
    }[];
    if (!info) return null;
    return {
      id: info.Id,
      name: info.Name.replace(/^\//, ''),
      running: info.State.Running,
      restarting: info.State.Restarting,
      restartCount: info.RestartCount,
      pid: info.State.Pid,
      startedAt: info.State.StartedAt,
    };
  } catch {
    return null;
  }
}

/** Containers this campaign started or saw holding its lock. */
const known = new Set<string>();

/** Every container of this campaign's Agents: the first one, its successors (named after it) and the standby runs of any of them. */
async function agentContainers(): Promise<string[]> {
  const lines = (
    await docker(
      'ps',
      '-a',
      '--no-trunc',
      '--format',
      '{{.ID}} {{.Names}} {{.Label "io.resultity.agent-standby-of"}} {{.Label "io.resultity.agent-successor-of"}}',
    )
  )
    .split('\n')
    .filter(Boolean);
  const ours: string[] = [];
  for (const line of lines) {
    const [id = '', name = '', standbyOf = '', successorOf = ''] = line.split(' ');
    if (name.startsWith(NAME) || known.has(id) || known.has(standbyOf) || known.has(successorOf)) ours.push(id);
  }
  return ours;
}

async function killPid(id: string): Promise<{ pid: number } | null> {
  const state = await inspect(id);
  if (state === null || !state.running || state.pid <= 0) return null;
  try {
    process.kill(state.pid, 'SIGKILL');
    return { pid: state.pid };
  } catch {
    return null;
  }
}

/** A build of the Agent image under another label: another digest, pushed, local tag removed (so the Agent really pulls it). */
function derive(work: string, base: { image: string; digest: string }, name: string, broken = false): Promise<{ ref: string; digest: string }> {
  // A broken build cannot reach its origin as the daemon and exits 5 s after each start.
  const tail = broken ? 'COPY crash-loop.cjs /opt/crash-loop.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/crash-loop.cjs"]' : '';
  return deriveImage({
    work,
    from: base,
    name,
    tag: `hochaos-${SEED}-${name}`,
    tail,
    files: broken ? { 'crash-loop.cjs': brokenAgentEntry() } : {},
    removeLocal: true,
  });
}

interface LockTransition {
  t: number;
  from: string | null;
  to: string | null;
  /** What the engine and the audit log said at the change. */
  previousState: string;
  ok: boolean;
}

/**
 * Samples the lock file on every inotify event in the state directory and every 10 ms, and
 * checks each change of holder: the previous holder (a container) must be gone, restarted, or
 * the predecessor of a hand-over it audited (idle from `agent-handover` on).
 */
function watchLock(stateDir: string) {
  const transitions: LockTransition[] = [];
  const problems: string[] = [];
  let samples = 0;
  let currentNonce: string | null | undefined;
  /** The last container seen holding the lock, and when that container had started. */
  let last: { container: string; startedAt: string } | null = null;
  let busy = false;
  const sample = async () => {
    if (busy) return;
    busy = true;
    try {
      samples += 1;
      const holder = await lockHolder(stateDir);
      if (holder !== null && holder.container === undefined) problems.push(`a lock holder outside a container: pid ${holder.pid}`);
      const nonce = holder?.nonce ?? null;
      if (nonce === currentNonce) return;
      currentNonce = nonce;
      const to = holder?.container ?? null;
      if (to === null) return;
      known.add(to);
      const t = Date.now();
      const mine = await inspect(to);
      const from = last;
      last = { container: to, startedAt: mine?.startedAt ?? '' };
      if (from === null || from.container === to) {
        transitions.push({ t, from: from?.container ?? null, to, previousState: from === null ? 'first' : 'same container', ok: true });
        return;
      }
      const [state, entries] = await Promise.all([inspect(from.container), auditEntries(stateDir)]);
      const lastHandover = entries.findLast((e) => e.type === 'agent-handover');
      const idlePredecessor = lastHandover !== undefined && lastHandover.predecessor === from.container;
      const restarted = state !== null && state.startedAt !== from.startedAt;
      const previousState =
        state === null
          ? 'gone'
          : `${state.running ? 'running' : 'stopped'} restarts=${state.restartCount}${restarted ? ' restarted' : ''}${idlePredecessor ? ' idle-predecessor' : ''}`;
      // A holder whose process still runs after losing the lock may only be the predecessor that stopped applying before it released.
      const ok = state === null || !state.running || state.restarting || restarted || idlePredecessor;
      if (!ok) problems.push(`lock went from ${from.container.slice(0, 12)} (${previousState}) to ${to.slice(0, 12)}`);
      transitions.push({ t, from: from.container, to, previousState, ok });
    } finally {
      busy = false;
    }
  };
  let watcher: FSWatcher | null = null;
  try {
    watcher = watch(stateDir, () => void sample());
  } catch {
    // Polling alone then.
  }
  const timer = setInterval(() => void sample(), 10);
  return {
    transitions,
    problems,
    samples: () => samples,
    stop() {
      clearInterval(timer);
      watcher?.close();
    },
  };
}

interface Trial {
  kill: number;
  from_digest: string;
  to_digest: string;
  step: Step;
  victim: Victim;
  /** A build that crash-loops after its takeover: the node must never settle on it. */
  broken: boolean;
  fired: boolean;
  killed: { container: string; role: Victim; pid: number; after_ms: number } | null;
  /** The last audit entry when the kill landed. */
  at_audit: string | null;
  outcome: 'handed-over' | 'reverted' | 'failed-before-takeover' | 'no-hand-over' | 'unknown';
  settle_ms: number;
  holder: string | null;
  problems: string[];
  ok: boolean;
}

async function main(): Promise<void> {
  log(`hand-over kill campaign: seed ${SEED}, ${KILLS} kills`);
  const work = await mkdtemp(join(tmpdir(), `resultity-hochaos-${SEED}-`));
  const { buildAgentImage } = (await import(join(here, '../../images/build.mjs'))) as {
    buildAgentImage: (o: object) => Promise<{ image: string; digest: string; tag: string; base: string }>;
  };
  const v1 = await buildAgentImage({ registry: REGISTRY, tag: `hochaos-${SEED}-v1`, version: `0.0.0-hochaos.${SEED}` });
  const builds: { ref: string; digest: string }[] = [];
  const net = await createDevNetwork(join(work, 'net'), 'testnet');
  const origin = await startOriginServer({ dir: net.originDir });
  const etc = join(work, 'etc');
  const stateDir = join(work, 'state');
  await mkdir(etc, { recursive: true });
  await copyFile(net.rootFile, join(etc, 'root-1.json'));
  await writeAgentConfig(join(etc, 'agent.json'), {
    network: 'testnet',
    origin: origin.url,
    node_id: `node-hochaos-${SEED}`,
    trust_root: ['root-1.json'],
    state_dir: stateDir,
    allowed_registries: [REGISTRY],
    bridge: { enabled: false },
    status: { listen: null },
    // A reverted build is not tried again: every trial names a fresh one.
    retry_budget: 1,
    self_update: { handover_timeout_ms: TIMEOUT_MS },
    timers: { poll_interval_s: 1, heartbeat_interval_s: 60, retry_initial_ms: 100, retry_max_ms: 500 },
  });
  const configFile = join(work, 'etc', 'agent.json');
  let sequence = 0;
  const publish = (digest: string | null) => {
    sequence += 1;
    const extra = digest === null ? {} : { updates: { agent: { version: `0.0.0-${sequence}`, image: v1.image, digest } } };
    return net.publish(devSnapshot({ network: 'testnet', sequence, pollSeconds: 1, extra })).then(() => sequence);
  };
  await publish(null);
  const runsDigest = async (id: string, digest: string) => {
    const image = await docker('inspect', '--format', '{{.Image}}', id);
    const digests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', image)) as string[];
    return digests.includes(`${v1.image}@${digest}`);
  };
  const first = await docker(
    'run',
    '-d',
    '--name',
    NAME,
    '--restart',
    'always',
    ...agentRunArgs({ stateDir, configDir: etc, image: `${v1.image}@${v1.digest}` }),
  );
  known.add(first);
  const lockWatch = watchLock(stateDir);
  const trials: Trial[] = [];
  let running = { id: first, digest: v1.digest };
  const campaignStart = Date.now();
  try {
    await until('the first Agent to apply', async () => (await auditEntries(stateDir)).some((e) => e.type === 'applied' && e.sequence === 1), 120_000);
    for (let k = 1; k <= KILLS; k++) {
      const [onlyStep, onlyVictim] = (args.only ?? '').split(':') as [Step | '', Victim | undefined];
      const step: Step = onlyStep === '' ? pick(STEPS) : onlyStep;
      const victim: Victim = onlyVictim ?? pick(VICTIMS[step]);
      const delay = random();
      // Drawn only when asked for, so that the seeds recorded without --broken replay the same trials.
      const broken = Number(args.broken) > 0 && random() < Number(args.broken);
      const target = await derive(work, v1, `v${k + 1}${broken ? '-broken' : ''}`, broken);
      builds.push(target);
      const trial: Trial = {
        kill: k,
        from_digest: running.digest,
        to_digest: target.digest,
        step,
        victim,
        broken,
        fired: false,
        killed: null,
        at_audit: null,
        outcome: 'unknown',
        settle_ms: 0,
        holder: null,
        problems: [],
        ok: false,
      };
      const predecessor = running.id;
      const outcomeFiles = async () => (await readdir(stateDir)).filter((f) => f.endsWith('.outcome'));
      const outcomesBefore = await outcomeFiles();
      const startLen = (await auditEntries(stateDir)).length;
      const seq = await publish(target.digest);
      const t0 = Date.now();
      const sinceStart = async () => (await auditEntries(stateDir)).slice(startLen);
      const successorOf = async () =>
        (await docker('ps', '-aq', '--no-trunc', '--filter', `label=io.resultity.agent-successor-of=${predecessor}`)).split('\n').filter(Boolean)[0] ?? null;
      const standbyOf = async () =>
        (await docker('ps', '-aq', '--no-trunc', '--filter', `label=io.resultity.agent-standby-of=${predecessor}`)).split('\n').filter(Boolean)[0] ?? null;
      // Wait for the step, then kill the victim.
      try {
        switch (step) {
          case 'pull':
            await until('the update to be applied', async () => (await sinceStart()).some((e) => e.type === 'applied' && e.sequence === seq), 60_000, 20);
            await sleep(delay * 300);
            break;
          case 'standby-start':
            await until('the standby container', standbyOf, 60_000, 20);
            break;
          case 'standby-check':
            await until('the standby container', standbyOf, 60_000, 20);
            await sleep(delay * 2000);
            break;
          case 'lock-release':
            if (victim === 'predecessor') await until('agent-handover', async () => (await sinceStart()).some((e) => e.type === 'agent-handover'), 90_000, 10);
            else await until('the successor container', successorOf, 90_000, 10);
            break;
          case 'lock-take':
            await until(
              'the lock to name another container',
              async () => {
                const h = await lockHolder(stateDir);
                return h?.container !== undefined && h.container !== predecessor;
              },
              90_000,
              5,
            );
            break;
          case 'confirmation':
            await until('agent-takeover', async () => (await sinceStart()).some((e) => e.type === 'agent-takeover'), 90_000, 10);
            await sleep(delay * 1500);
            break;
          case 'predecessor-removal':
            // The outcome of the last hand-over is kept: only a new one is this hand-over's.
            await until('the hand-over outcome', async () => (await outcomeFiles()).some((f) => !outcomesBefore.includes(f)), 90_000, 5);
            break;
        }
        trial.fired = true;
      } catch (error) {
        log(`kill ${k}: step ${step} not reached: ${(error as Error).message}`);
      }
      if (trial.fired) {
        const id = victim === 'predecessor' ? predecessor : await successorOf();
        if (id !== null) known.add(id);
        const killed = id === null ? null : await killPid(id);
        if (id !== null && killed !== null) trial.killed = { container: id, role: victim, pid: killed.pid, after_ms: Date.now() - t0 };
        const last = (await auditEntries(stateDir)).at(-1);
        trial.at_audit = last?.type ?? null;
      }
      log(
        `kill ${k}: ${step} / ${victim}: ${trial.killed ? `killed ${trial.killed.container.slice(0, 12)} pid ${trial.killed.pid} after ${trial.killed.after_ms} ms (last audit ${trial.at_audit})` : 'nothing killed'}`,
      );
      // Settle: restart policies act; nobody else does anything.
      const settleStart = Date.now();
      try {
        const settled = await until(
          'the node to settle on one Agent',
          async () => {
            if ((await readFile(join(stateDir, 'handover.json'), 'utf8').catch(() => null)) !== null) return null;
            const holder = await lockHolder(stateDir);
            if (!holder?.container) return null;
            const ids = await agentContainers();
            const states = (await Promise.all(ids.map(inspect))).filter((s): s is ContainerState => s !== null);
            if (states.length !== 1) return null;
            const only = states[0]!;
            if (only.id !== holder.container || !only.running) return null;
            // Final only once the update is resolved: a predecessor killed before it counted an
            // attempt comes back and tries the same build again.
            if (!(await runsDigest(only.id, target.digest))) {
              const spent = (await sinceStart()).some(
                (e) => (e.type === 'agent-update-failed' || e.type === 'agent-update-reverted') && e.image_digest === target.digest,
              );
              if (!spent) return null;
            }
            return only;
          },
          4 * TIMEOUT_MS + 120_000,
          250,
        );
        // Applying: a probe snapshot without an update gets applied by that Agent.
        const probe = await publish(null);
        await until(
          `probe snapshot ${probe} to be applied`,
          async () => (await auditEntries(stateDir)).some((e) => e.type === 'applied' && e.sequence === probe),
          60_000,
          200,
        );
        const holder = await lockHolder(stateDir);
        if (holder?.container !== settled.id) trial.problems.push('the lock holder changed during the probe');
        const verify = await run(process.execPath, [CLI, 'audit', 'verify', '--config', configFile], { timeout: 60_000 }).then(
          (r) => ({ code: 0, out: r.stdout }),
          (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }),
        );
        if (verify.code !== 0) trial.problems.push(`audit verify: ${verify.out.trim()}`);
        const log2 = await sinceStart();
        const reverted = log2.some((e) => e.type === 'agent-update-reverted');
        const failed = log2.some((e) => e.type === 'agent-update-failed');
        const runsTarget = await runsDigest(settled.id, target.digest);
        if (broken && runsTarget) trial.problems.push('the node settled on a broken build');
        trial.outcome = runsTarget ? 'handed-over' : reverted ? 'reverted' : failed ? 'failed-before-takeover' : 'no-hand-over';
        trial.holder = settled.id;
        running = { id: settled.id, digest: runsTarget ? target.digest : running.digest };
      } catch (error) {
        trial.problems.push((error as Error).message);
        const ids = await agentContainers().catch(() => []);
        const states = await Promise.all(ids.map(inspect));
        trial.problems.push(
          `containers: ${JSON.stringify(states.map((s) => s && { id: s.id.slice(0, 12), name: s.name, running: s.running, restarts: s.restartCount }))}`,
        );
        trial.problems.push(`lock: ${JSON.stringify(await lockHolder(stateDir))}`);
        trial.problems.push(`record: ${await readFile(join(stateDir, 'handover.json'), 'utf8').catch(() => 'none')}`);
      }
      trial.settle_ms = Date.now() - settleStart;
      trial.problems.push(...lockWatch.problems.splice(0));
      trial.ok = trial.problems.length === 0;
      trials.push(trial);
      log(`kill ${k}: ${trial.ok ? 'ok' : 'FAILED'}: ${trial.outcome}, settled in ${trial.settle_ms} ms${trial.ok ? '' : `: ${trial.problems.join('; ')}`}`);
      if (!trial.ok) break;
    }
  } finally {
    lockWatch.stop();
    const passed = trials.filter((t) => t.ok).length;
    const result = {
      seed: SEED,
      kills: KILLS,
      date: new Date().toISOString(),
      handover_timeout_ms: TIMEOUT_MS,
      broken_share: Number(args.broken),
      only: args.only ?? null,
      duration_s: Math.round((Date.now() - campaignStart) / 1000),
      passed,
      trials,
      lock: {
        samples: lockWatch.samples(),
        transitions: lockWatch.transitions.length,
        bad_transitions: lockWatch.transitions.filter((t) => !t.ok),
      },
      outcomes: Object.fromEntries(
        ['handed-over', 'reverted', 'failed-before-takeover', 'no-hand-over', 'unknown'].map((o) => [o, trials.filter((t) => t.outcome === o).length]),
      ),
      steps: Object.fromEntries(
        STEPS.map((s) => [
          s,
          trials
            .filter((t) => t.step === s)
            .map((t) => t.victim[0])
            .join(''),
        ]),
      ),
    };
    await mkdir(args.out, { recursive: true });
    await writeFile(join(args.out, `handover-${SEED}.json`), `${JSON.stringify(result, null, 2)}\n`);
    log(
      `seed ${SEED}: ${passed}/${trials.length} passed; ${lockWatch.samples()} lock samples, ${lockWatch.transitions.length} holder changes; results in ${join(args.out, `handover-${SEED}.json`)}`,
    );
    for (const id of await agentContainers().catch(() => [])) await docker('rm', '-f', id).catch(() => undefined);
    await docker('rm', '-f', first).catch(() => undefined);
    await origin.close();
    for (const b of builds) await docker('image', 'rm', `${v1.image}@${b.digest}`).catch(() => undefined);
    await docker('image', 'rm', `${v1.image}:${v1.tag}`).catch(() => undefined);
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
    if (trials.some((t) => !t.ok)) process.exitCode = 1;
  }
}

await main();
