import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startOriginServer } from '@resultity/snapshot/origin';
import { AGENT_LAUNCHER, agentRunArgs, brokenAgentEntry, deriveImage, tempDir } from '@resultity/testkit';
import { type DevNetwork, createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type BuiltImage, buildAgentImage } from '../../../images/build.mjs';
import { type AuditEntry, readAuditEntries } from '../src/audit.js';
import { cli } from './helpers.js';

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim();
const registry = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const runId = `${process.pid}x${Date.now().toString(36)}`;
const base = `resultity-local/node-base:${process.versions.node}`;

async function until(what: string, probe: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A build derived from `from` by a Dockerfile tail, pushed; returns its digest. */
function derive(work: string, from: BuiltImage, name: string, tail: string, files: Record<string, string> = {}): Promise<{ ref: string; digest: string }> {
  return deriveImage({ work, from, name, tag: `test-${name}-${runId}`, tail, files });
}

/** Cannot reach the origin when running as the Agent (standby works), and exits 5 s after every start. */
const crashLoopScript = brokenAgentEntry();
/** The same without the exit: it takes over and would sit unconfirmed until killed. */
const noOriginScript = brokenAgentEntry({ exitAfterMs: null });
/** Cannot reach the origin for the first 15 s after each start (standby works), then can: a slow first sync. */
const lateOriginScript = brokenAgentEntry({ exitAfterMs: null, originAfterMs: 15_000 });

/** Kills a container's main process from the host, as a crash would: unlike `docker kill`, the restart policy applies. */
async function killPid(id: string): Promise<number> {
  const pid = Number(await docker('inspect', '--format', '{{.State.Pid}}', id));
  if (!(pid > 0)) throw new Error(`container ${id} has no process to kill`);
  process.kill(pid, 'SIGKILL');
  return pid;
}

describe('the Agent following updates.agent in its container', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let baseExisted = false;
  let v1: BuiltImage;
  const derived: { ref: string; digest: string }[] = [];
  let v2: { ref: string; digest: string };
  let exitsAtStart: { ref: string; digest: string };
  let standbyFails: { ref: string; digest: string };
  let runFails: { ref: string; digest: string };
  let crashesAfterTakeover: { ref: string; digest: string };
  let noOrigin: { ref: string; digest: string };
  let noOriginB: { ref: string; digest: string };
  let crashLoopB: { ref: string; digest: string };
  let lateOrigin: { ref: string; digest: string };
  let slowStandby: { ref: string; digest: string };
  let net: DevNetwork;
  let origin: Awaited<ReturnType<typeof startOriginServer>>;
  let state: string;
  const container = `resultity-agent-test-${runId}`;
  let containerId = '';
  let successorId = '';

  beforeAll(async () => {
    baseExisted = await docker('image', 'inspect', base).then(
      () => true,
      () => false,
    );
    work = await tempDir('agent-self-update-');
    v1 = await buildAgentImage({ registry, tag: `test-v1-${runId}`, version: `0.0.0-v1.${runId}` });
    // v2 is the same Agent under another label: another image, another digest.
    v2 = await derive(work.path, v1, 'v2', '');
    exitsAtStart = await derive(work.path, v1, 'v3-exits', 'ENTRYPOINT ["/usr/local/bin/node", "-e", "process.exit(70)"]\nCMD []');
    // A build whose standby check fails the way a broken release would: it says why and exits 1.
    standbyFails = await derive(
      work.path,
      v1,
      'v3-standby-fails',
      `ENTRYPOINT ["/usr/local/bin/node", "-e", "if (process.argv.includes('standby')) { console.error('STATE_CORRUPT: this build cannot read the state'); process.exit(1); } else import('${AGENT_LAUNCHER}');"]`,
    );
    // A build that passes standby (the real launcher) but cannot run as the Agent.
    runFails = await derive(
      work.path,
      v1,
      'v3-run-fails',
      `ENTRYPOINT ["/usr/local/bin/node", "-e", "if (process.argv.includes('standby')) { process.argv.splice(1, 0, '${AGENT_LAUNCHER}'); import('${AGENT_LAUNCHER}'); } else { console.error('CONFIG_INVALID: this build cannot run'); process.exit(2); }"]`,
    );
    // A build that passes standby and takes over, then cannot reach its origin (so never has a
    // successful sync) and exits a few seconds after every start: a crash loop after the takeover.
    crashesAfterTakeover = await derive(
      work.path,
      v1,
      'v3-crash-loop',
      'COPY crash-loop.cjs /opt/crash-loop.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/crash-loop.cjs"]',
      {
        'crash-loop.cjs': crashLoopScript,
      },
    );
    // The same, minus the exit: it takes over and would sit unconfirmed until killed.
    noOrigin = await derive(work.path, v1, 'v3-no-origin', 'COPY no-origin.cjs /opt/no-origin.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/no-origin.cjs"]', {
      'no-origin.cjs': noOriginScript,
    });
    // Another digest of that build, for a second kill (the retry budget is per digest).
    noOriginB = await derive(
      work.path,
      v1,
      'v3-no-origin-b',
      'COPY no-origin.cjs /opt/no-origin.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/no-origin.cjs"]',
      {
        'no-origin.cjs': noOriginScript,
      },
    );
    // Another digest of the crash-looping build, for the predecessor killed while it guards.
    crashLoopB = await derive(
      work.path,
      v1,
      'v3-crash-loop-b',
      'COPY crash-loop.cjs /opt/crash-loop.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/crash-loop.cjs"]',
      {
        'crash-loop.cjs': crashLoopScript,
      },
    );
    lateOrigin = await derive(
      work.path,
      v1,
      'v3-late-origin',
      'COPY late-origin.cjs /opt/late-origin.cjs\nENTRYPOINT ["/usr/local/bin/node", "/opt/late-origin.cjs"]',
      {
        'late-origin.cjs': lateOriginScript,
      },
    );
    // A build whose standby check takes 20 s and then fails: time to kill the Agent that waits for it.
    slowStandby = await derive(
      work.path,
      v1,
      'v3-slow-standby',
      `ENTRYPOINT ["/usr/local/bin/node", "-e", "if (process.argv.includes('standby')) setTimeout(() => { console.error('STATE_CORRUPT: slow and broken'); process.exit(1); }, 20000); else import('${AGENT_LAUNCHER}');"]`,
    );
    derived.push(v2, exitsAtStart, standbyFails, runFails, crashesAfterTakeover, noOrigin, noOriginB, crashLoopB, lateOrigin, slowStandby);

    net = await createDevNetwork(join(work.path, 'net'), 'testnet');
    origin = await startOriginServer({ dir: net.originDir });
    const etc = join(work.path, 'etc');
    state = join(work.path, 'var-lib');
    await mkdir(etc, { recursive: true });
    await copyFile(net.rootFile, join(etc, 'root-1.json'));
    await writeAgentConfig(join(etc, 'agent.json'), {
      network: 'testnet',
      origin: origin.url,
      node_id: 'node-self-update-1',
      trust_root: ['root-1.json'],
      state_dir: state,
      allowed_registries: [registry],
      bridge: { enabled: false },
      status: { listen: null },
      retry_budget: 1,
      timers: { poll_interval_s: 1, heartbeat_interval_s: 60, retry_initial_ms: 100, retry_max_ms: 500 },
    });
    // The documented run line, with a name of its own.
    containerId = await docker(
      'run',
      '-d',
      '--name',
      container,
      '--restart',
      'always',
      ...agentRunArgs({ stateDir: state, configDir: etc, image: `${v1.image}@${v1.digest}` }),
    );
  }, 400_000);

  afterAll(async () => {
    if (containerId) {
      for (const filter of [
        `label=io.resultity.agent-standby-of=${containerId}`,
        `label=io.resultity.agent-successor-of=${containerId}`,
        `name=^${container}`,
      ]) {
        const ids = (await docker('ps', '-aq', '--filter', filter).catch(() => '')).split('\n').filter(Boolean);
        if (ids.length > 0) await docker('rm', '-f', ...ids).catch(() => undefined);
      }
      if (successorId) {
        const standbys = (await docker('ps', '-aq', '--filter', `label=io.resultity.agent-standby-of=${successorId}`).catch(() => ''))
          .split('\n')
          .filter(Boolean);
        if (standbys.length > 0) await docker('rm', '-f', ...standbys).catch(() => undefined);
        await docker('rm', '-f', successorId).catch(() => undefined);
      }
      await docker('rm', '-f', containerId).catch(() => undefined);
    }
    await origin?.close();
    for (const d of derived) {
      await docker('image', 'rm', d.ref).catch(() => undefined);
      await docker('image', 'rm', `${v1?.image}@${d.digest}`).catch(() => undefined);
    }
    if (v1) {
      await docker('image', 'rm', `${v1.image}:${v1.tag}`).catch(() => undefined);
      await docker('image', 'rm', `${v1.image}@${v1.digest}`).catch(() => undefined);
      if (!baseExisted) await docker('image', 'rm', v1.base).catch(() => undefined);
    }
    await work?.cleanup();
  });

  const audit = (): Promise<AuditEntry[]> => readAuditEntries(join(state, 'audit.jsonl')).catch(() => []);
  const entriesFor = async (type: string, digest: string) => (await audit()).filter((e) => e.type === type && e.image_digest === digest);
  const publishWithAgentUpdate = (sequence: number, digest: string) =>
    net.publish(
      devSnapshot({ network: 'testnet', sequence, pollSeconds: 1, extra: { updates: { agent: { version: `0.0.0-${sequence}`, image: v1.image, digest } } } }),
    );
  const runningId = async (id: string) => (await docker('inspect', '--format', '{{.State.Running}}', id).catch(() => 'gone')) === 'true';
  const lockHolder = async () => JSON.parse((await readFile(join(state, 'agent.lock'), 'utf8').catch(() => '{}')) || '{}') as { container?: string };
  const standbyContainers = async (of: string) =>
    (await docker('ps', '-aq', '--filter', `label=io.resultity.agent-standby-of=${of}`)).split('\n').filter(Boolean);
  const auditIntact = async () => {
    const verified = await cli(['audit', 'verify', '--config', join(work.path, 'etc', 'agent.json')]);
    expect(verified.stdout).toMatch(/^audit log intact/);
    expect(verified.code).toBe(0);
  };

  it('keeps its state lock from a CLI on the host, which sees another pid namespace', async () => {
    await until('the Agent in the container to hold the lock', async () => (await lockHolder()).container === containerId);
    const result = await cli(['sync', '--once', '--config', join(work.path, 'etc', 'agent.json')]);
    expect(result.stderr).toMatch(/^LOCKED: another Agent \(pid \d+ in container [0-9a-f]{12}\) holds /);
    expect(result.code).not.toBe(0);
    expect(await runningId(containerId)).toBe(true);
  });

  it('hands over from v1 to v2: v2 holds the lock under the same name, v1 is gone, the audit chain goes on', async () => {
    const published = await publishWithAgentUpdate(1, v2.digest);
    await until('v2 to take over', async () => (await audit()).some((e) => e.type === 'agent-takeover'));
    const log = await audit();
    const takeover = log.find((e) => e.type === 'agent-takeover')!;
    successorId = String(takeover.container);
    expect(takeover.predecessor).toBe(containerId);
    await until('v2 to confirm a successful sync', async () => (await audit()).some((e) => e.type === 'agent-confirmed' && e.container === successorId));
    expect((await audit()).find((e) => e.type === 'agent-confirmed')!.seq).toBeGreaterThan(takeover.seq);
    const handover = log.find((e) => e.type === 'agent-handover')!;
    expect(handover).toMatchObject({ image_digest: v2.digest, predecessor: containerId });
    expect(handover.seq).toBeLessThan(takeover.seq);
    expect((await entriesFor('agent-standby-passed', v2.digest))[0]).toMatchObject({ seen_in: published.digest });
    await until('v1 to be removed', async () => (await docker('ps', '-aq', '--filter', `id=${containerId}`)) === '');
    await until('v2 to take the name', async () => (await docker('inspect', '--format', '{{.Name}}', successorId)) === `/${container}`);
    expect(await runningId(successorId)).toBe(true);
    expect((await lockHolder()).container).toBe(successorId);
    const image = await docker('inspect', '--format', '{{.Image}}', successorId);
    expect(JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', image))).toContain(`${v1.image}@${v2.digest}`);
    await auditIntact();
  });

  it('leaves v2 in charge when a v3 fails its standby check, with the failure audited and the candidate removed', async () => {
    const published = await publishWithAgentUpdate(2, standbyFails.digest);
    await until('the failed standby to be audited', async () => (await entriesFor('agent-update-failed', standbyFails.digest)).length > 0);
    const [failure] = await entriesFor('agent-update-failed', standbyFails.digest);
    expect(failure).toMatchObject({ stage: 'standby', code: 'STANDBY_FAILED', exit_code: 1, seen_in: published.digest, attempt: 1 });
    expect(String(failure?.message)).toContain('STATE_CORRUPT: this build cannot read the state');
    expect(await runningId(successorId)).toBe(true);
    expect((await lockHolder()).container).toBe(successorId);
    expect(await standbyContainers(successorId)).toEqual([]);
  });

  it('does not try that digest again past the retry budget, and leaves v2 in charge when a v3 exits at start', async () => {
    await publishWithAgentUpdate(3, standbyFails.digest);
    await until('snapshot 3 to be applied', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 3));
    await publishWithAgentUpdate(4, exitsAtStart.digest);
    await until('the failed start to be audited', async () => (await entriesFor('agent-update-failed', exitsAtStart.digest)).length > 0);
    expect((await entriesFor('agent-update-failed', exitsAtStart.digest))[0]).toMatchObject({ stage: 'standby', code: 'STANDBY_FAILED', exit_code: 70 });
    // Considerations run one after another, so a retry of snapshot 3's digest would be in the log by now.
    expect(await entriesFor('agent-update-failed', standbyFails.digest)).toHaveLength(1);
    expect(await runningId(successorId)).toBe(true);
    expect((await lockHolder()).container).toBe(successorId);
    expect(await standbyContainers(successorId)).toEqual([]);
    await auditIntact();
  });

  it('takes the node back when a v3 passes standby but never takes over, and does not try it again', async () => {
    await publishWithAgentUpdate(5, runFails.digest);
    await until('the failed hand-over to be audited', async () => (await entriesFor('agent-update-failed', runFails.digest)).length > 0);
    const [failure] = await entriesFor('agent-update-failed', runFails.digest);
    expect(failure).toMatchObject({ stage: 'handover', code: 'HANDOVER_FAILED', message: 'the successor exited before it took over' });
    expect((await entriesFor('agent-standby-passed', runFails.digest)).length).toBe(1);
    // v2 exits after taking the lock back, and its restart policy starts it afresh.
    await until('v2 to run again and hold the lock', async () => (await runningId(successorId)) && (await lockHolder()).container === successorId);
    await until('v2 to note its restart', async () => (await audit()).filter((e) => e.type === 'start').length >= 3);
    expect(await docker('ps', '-aq', '--filter', `label=io.resultity.agent-successor-of=${successorId}`)).toBe('');
    await publishWithAgentUpdate(6, exitsAtStart.digest);
    await until('snapshot 6 to be applied', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 6));
    expect(await entriesFor('agent-standby-passed', runFails.digest)).toHaveLength(1);
    expect((await audit()).filter((e) => e.type === 'agent-takeover')).toHaveLength(1);
    await auditIntact();
  }, 300_000);

  it('gives the node back to v2 when a v3 takes over and then crash-loops, and does not try it again', async () => {
    await publishWithAgentUpdate(7, crashesAfterTakeover.digest);
    await until('the revert to be audited', async () => (await entriesFor('agent-update-reverted', crashesAfterTakeover.digest)).length > 0);
    const log = await audit();
    const [reverted] = await entriesFor('agent-update-reverted', crashesAfterTakeover.digest);
    const crashed = String(reverted?.successor);
    // It did take over (the lock and the audit log) before it failed: this is the case the guard is for.
    const takeover = log.find((e) => e.type === 'agent-takeover' && e.container === crashed);
    expect(takeover).toMatchObject({ predecessor: successorId });
    expect(takeover!.seq).toBeLessThan(reverted!.seq);
    expect(reverted).toMatchObject({ code: 'SUCCESSOR_NOT_CONFIRMED', attempt: 1 });
    expect(log.some((e) => e.type === 'agent-confirmed' && e.container === crashed)).toBe(false);
    // The crash-looping container is gone; v2 (never removed) restarts and holds the lock again.
    expect(await docker('ps', '-aq', '--filter', `id=${crashed}`)).toBe('');
    await until('v2 to run again and hold the lock', async () => (await runningId(successorId)) && (await lockHolder()).container === successorId);
    await publishWithAgentUpdate(8, crashesAfterTakeover.digest);
    await until('snapshot 8 to be applied by v2', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 8));
    expect(await entriesFor('agent-standby-passed', crashesAfterTakeover.digest)).toHaveLength(1);
    expect((await lockHolder()).container).toBe(successorId);
    await auditIntact();
  }, 300_000);

  it('gives the node back to v2 when the successor is killed with SIGKILL after taking over, with one lock holder at a time', async () => {
    await publishWithAgentUpdate(9, noOrigin.digest);
    let killed = '';
    await until('a v3 to take over', async () => {
      const log = await audit();
      const handover = log.find((e) => e.type === 'agent-handover' && e.image_digest === noOrigin.digest);
      const takeover = handover && log.find((e) => e.type === 'agent-takeover' && e.seq > handover.seq);
      killed = takeover ? String(takeover.container) : '';
      return killed !== '';
    });
    await docker('kill', '-s', 'KILL', killed);
    // Every holder seen from here on is v2 or the killed v3, and once v2 holds it again it never changes back.
    const holders: string[] = [];
    await until('the revert to be audited', async () => {
      const holder = (await lockHolder()).container;
      if (holder && holders.at(-1) !== holder) holders.push(holder);
      return (await entriesFor('agent-update-reverted', noOrigin.digest)).length > 0;
    });
    await until('v2 to run again and hold the lock', async () => {
      const holder = (await lockHolder()).container;
      if (holder && holders.at(-1) !== holder) holders.push(holder);
      return (await runningId(successorId)) && holder === successorId;
    });
    expect(holders.every((h) => h === successorId || h === killed)).toBe(true);
    expect(holders.indexOf(successorId) === -1 || holders.slice(holders.indexOf(successorId)).every((h) => h === successorId)).toBe(true);
    expect((await entriesFor('agent-update-reverted', noOrigin.digest))[0]).toMatchObject({ code: 'SUCCESSOR_NOT_CONFIRMED', successor: killed });
    expect((await audit()).some((e) => e.type === 'agent-confirmed' && e.container === killed)).toBe(false);
    expect(await docker('ps', '-aq', '--filter', `id=${killed}`)).toBe('');
    await publishWithAgentUpdate(10, noOrigin.digest);
    await until('snapshot 10 to be applied by v2', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 10));
    expect((await lockHolder()).container).toBe(successorId);
    expect(await runningId(successorId)).toBe(true);
    expect(await docker('ps', '-aq', '--filter', `label=io.resultity.agent-successor-of=${successorId}`)).toBe('');
    await auditIntact();
  }, 300_000);

  it('keeps v2 in charge when the successor is killed with SIGKILL as soon as it is started', async () => {
    await publishWithAgentUpdate(11, noOriginB.digest);
    let killed = '';
    await until('the successor to be started', async () => {
      killed = (await docker('ps', '-aq', '--no-trunc', '--filter', `label=io.resultity.agent-successor-of=${successorId}`)).split('\n')[0] ?? '';
      return killed !== '';
    });
    await docker('kill', '-s', 'KILL', killed);
    // Killed before or just after its takeover (the engine decides which): a failed hand-over or a revert, v2 either way.
    const outcome = async () => [
      ...(await entriesFor('agent-update-failed', noOriginB.digest)),
      ...(await entriesFor('agent-update-reverted', noOriginB.digest)),
    ];
    await until('the failure to be audited', async () => (await outcome()).length > 0);
    expect(await outcome()).toHaveLength(1);
    expect((await outcome())[0]).toMatchObject({ successor: killed });
    await until('v2 to run again and hold the lock', async () => (await runningId(successorId)) && (await lockHolder()).container === successorId);
    expect(await docker('ps', '-aq', '--filter', `id=${killed}`)).toBe('');
    await publishWithAgentUpdate(12, noOriginB.digest);
    await until('snapshot 12 to be applied by v2', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 12));
    expect((await lockHolder()).container).toBe(successorId);
    expect(await docker('ps', '-aq', '--filter', `label=io.resultity.agent-successor-of=${successorId}`)).toBe('');
    await auditIntact();
  }, 300_000);

  /** Publishes an update to `target` and waits for its successor's takeover; returns the successor's id. */
  const takeoverOf = async (sequence: number, target: { digest: string }) => {
    await publishWithAgentUpdate(sequence, target.digest);
    let taken = '';
    await until('the successor to take over', async () => {
      const log = await audit();
      const handover = log.find((e) => e.type === 'agent-handover' && e.image_digest === target.digest);
      const takeover = handover && log.find((e) => e.type === 'agent-takeover' && e.seq > handover.seq);
      taken = takeover ? String(takeover.container) : '';
      return taken !== '';
    });
    return taken;
  };
  const restartCount = async (id: string) => Number(await docker('inspect', '--format', '{{.RestartCount}}', id).catch(() => '-1'));

  it('gives the node back to v2 when v2 is killed with kill -9 while it waits for the confirmation and the successor then crash-loops', async () => {
    const crashed = await takeoverOf(13, crashLoopB);
    const restartsBefore = await restartCount(successorId);
    // v2 is idle, holding nothing, waiting for the confirmation: the point where a kill used to leave the successor unguarded.
    await killPid(successorId);
    await until('v2 to be restarted by its policy', async () => (await restartCount(successorId)) > restartsBefore && (await runningId(successorId)));
    await until('the restarted v2 to resume guarding', async () =>
      (await docker('logs', successorId).catch(() => '')).includes('guarding the successor again'),
    );
    await until('the revert to be audited', async () => (await entriesFor('agent-update-reverted', crashLoopB.digest)).length > 0);
    expect((await entriesFor('agent-update-reverted', crashLoopB.digest))[0]).toMatchObject({
      code: 'SUCCESSOR_NOT_CONFIRMED',
      successor: crashed,
      attempt: 1,
    });
    expect((await audit()).some((e) => e.type === 'agent-confirmed' && e.container === crashed)).toBe(false);
    expect(await docker('ps', '-aq', '--filter', `id=${crashed}`)).toBe('');
    await until('v2 to hold the lock', async () => (await runningId(successorId)) && (await lockHolder()).container === successorId);
    await publishWithAgentUpdate(14, crashLoopB.digest);
    await until('snapshot 14 to be applied by v2', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 14));
    expect(await entriesFor('agent-standby-passed', crashLoopB.digest)).toHaveLength(1);
    expect((await lockHolder()).container).toBe(successorId);
    expect(await readFile(join(state, 'handover.json'), 'utf8').catch(() => null)).toBeNull();
    await auditIntact();
  }, 300_000);

  it('lets a successor that confirms after v2 was killed with kill -9 and restarted take the node, and removes v2', async () => {
    const v3 = await takeoverOf(15, lateOrigin);
    await killPid(successorId);
    // The successor cannot sync for 15 s after its start: v2 is back and guarding before it confirms.
    await until('the restarted v2 to resume guarding', async () =>
      (await docker('logs', successorId).catch(() => '')).includes('guarding the successor again'),
    );
    expect((await audit()).some((e) => e.type === 'agent-confirmed' && e.container === v3)).toBe(false);
    await until('v3 to confirm', async () => (await audit()).some((e) => e.type === 'agent-confirmed' && e.container === v3));
    await until('v2 to be removed', async () => (await docker('ps', '-aq', '--filter', `id=${successorId}`)) === '');
    await until('v3 to take the name', async () => (await docker('inspect', '--format', '{{.Name}}', v3)) === `/${container}`);
    expect(await runningId(v3)).toBe(true);
    expect((await lockHolder()).container).toBe(v3);
    expect(await entriesFor('agent-update-reverted', lateOrigin.digest)).toEqual([]);
    await until('the hand-over record to be cleared', async () => (await readFile(join(state, 'handover.json'), 'utf8').catch(() => null)) === null);
    await publishWithAgentUpdate(16, lateOrigin.digest);
    await until('snapshot 16 to be applied by v3', async () => (await audit()).some((e) => e.type === 'applied' && e.sequence === 16));
    expect((await lockHolder()).container).toBe(v3);
    successorId = v3;
    await auditIntact();
  }, 300_000);

  it('removes the standby container that an Agent killed with kill -9 during the standby run left', async () => {
    await publishWithAgentUpdate(17, slowStandby.digest);
    let standby = '';
    await until('the standby run', async () => {
      standby = (await standbyContainers(successorId))[0] ?? '';
      return standby !== '';
    });
    await killPid(successorId);
    // Restarted by its policy, the Agent removes what its killed run could not, then checks the build again.
    await until('the left standby container to be removed', async () => (await docker('ps', '-aq', '--filter', `id=${standby}`)) === '');
    await until('the second standby run to fail', async () => (await entriesFor('agent-update-failed', slowStandby.digest)).length > 0);
    expect(await runningId(successorId)).toBe(true);
    expect((await lockHolder()).container).toBe(successorId);
    expect(await standbyContainers(successorId)).toEqual([]);
    await auditIntact();
  }, 300_000);
});
