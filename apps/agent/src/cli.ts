#!/usr/bin/env node

import { request } from 'node:http';

import { readTokenFile } from '@resultity/bridge-protocol';
import { readFileBounded } from '@resultity/node-kit';
import { Command, CommanderError } from 'commander';

import { buildAgent, createLogger } from './agent.js';
import { verifyAuditFile } from './audit.js';
import { type AgentConfig, loadConfig, parseListen } from './config.js';
import { checkConfigDigest } from './digest.js';
import { type SyncOutcome, type UnpinOutcome, outcomeCode } from './engine.js';
import { AgentError, errorCode, errorMessage, escapeControl } from './errors.js';
import { applierFor, assertHostPaths, startAgent } from './main.js';
import { noRuntimeNotifier } from './ports.js';
import { terminalProgress } from './progress.js';
import { acquireLock } from './lock.js';
import { namespacedProcesses } from './lock-namespaces.js';
import { dockerContainerLiveness } from './agent-containers.js';
import { StateStore, statePaths } from './state.js';
import { collectStatus, renderStatus } from './status.js';
import { AGENT_VERSION } from './version.js';

/** Exit codes: 0 converged or nothing new, 1 refused or failed, 2 bad usage or configuration. */
class ExitError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(escapeControl(message));
  }
}

/** One-shot commands log only warnings, to stderr, so their stdout stays readable. */
async function oneShot(config: AgentConfig, access: { readOnly?: boolean } = {}) {
  const logger = createLogger({ ...config, log_level: config.log_level === 'info' || config.log_level === 'warn' ? 'error' : config.log_level }, 2);
  const applier = applierFor(config, logger);
  const progress = terminalProgress();
  const parts = await buildAgent(config, {
    applier,
    notifier: noRuntimeNotifier('one-shot command: no runtime bridge is hosted'),
    logger,
    ...(progress ? { onProgress: progress } : {}),
    ...(access.readOnly ? { readOnly: true } : {}),
  });
  return { parts, applier };
}

/** What a sync outcome says to a person; messages quote the network, so they are escaped. */
function describeOutcome(outcome: SyncOutcome): { ok: boolean; line: string } {
  const described = describeOutcomeRaw(outcome);
  return { ok: described.ok, line: escapeControl(described.line) };
}

function describeOutcomeRaw(outcome: SyncOutcome): { ok: boolean; line: string } {
  switch (outcome.result) {
    case 'applied':
      return { ok: true, line: `applied ${outcome.digest} (sequence ${outcome.sequence})` };
    case 'unchanged':
      return { ok: true, line: `up to date${outcome.digest ? `: ${outcome.digest}` : ''}` };
    case 'not-eligible':
      return { ok: true, line: `not in the rollout of ${outcome.digest}; staying on what runs` };
    case 'pinned':
      return { ok: true, line: `pinned to ${outcome.digest} by an operator's rollback; the origin's ${outcome.latest} is not newer` };
    case 'cancelled':
      return { ok: false, line: `ABORTED: the apply of ${outcome.digest} was cancelled` };
    case 'budget-exhausted':
      return {
        ok: false,
        line: `RETRY_BUDGET_EXHAUSTED: ${outcome.digest} failed too often (last ${outcome.code}: ${outcome.message}); waiting for a newer snapshot`,
      };
    default:
      return { ok: false, line: `${outcome.code}: ${outcome.message}` };
  }
}

/** What a control route answers: the outcome, or the code and message of its refusal. */
interface DaemonAnswer {
  outcome?: unknown;
  code?: string;
  message?: string;
}

/**
 * POSTs to a control route of the running daemon with the operator's token (never the bridge
 * token, which runtimes can read). Resolves with the daemon's outcome; its own refusal codes
 * (NOT_IN_HISTORY, EXPIRED, ...) are passed through as they are.
 */
async function callDaemon(config: AgentConfig, route: '/v1/rollback' | '/v1/unpin', body: object, otherwise: unknown): Promise<unknown> {
  const listen = config.status.listen === null ? null : parseListen(config.status.listen);
  if (listen === null) throw otherwise;
  const token = await readTokenFile(config.control.token_file);
  const payload = JSON.stringify(body);
  const where = 'socketPath' in listen ? listen.socketPath : `${listen.host}:${listen.port}`;
  const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(
      {
        ...('socketPath' in listen ? { socketPath: listen.socketPath } : { host: listen.host, port: listen.port }),
        path: route,
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        // A rollback waits for the apply it starts; an hour covers a large model download.
        timeout: 60 * 60_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    req.end(payload);
  }).catch((cause: unknown) => {
    throw new AgentError('DAEMON_UNREACHABLE', `the daemon holds the state directory but its status endpoint ${where} did not answer: ${errorMessage(cause)}`, {
      cause,
    });
  });
  let parsed: DaemonAnswer | null;
  try {
    parsed = JSON.parse(answer.text) as DaemonAnswer;
  } catch {
    parsed = null;
  }
  if (answer.status === 200 && parsed?.outcome !== undefined) return parsed.outcome;
  if (parsed?.code) throw Object.assign(new Error(parsed.message ?? 'refused'), { code: parsed.code });
  throw new AgentError(
    'DAEMON_UNREACHABLE',
    `the daemon answered ${answer.status} to ${route}${answer.status === 401 ? `: it refused the operator token in ${config.control.token_file}` : ''}`,
  );
}

export function buildProgram(): Command {
  const program = new Command('resultity-agent')
    .description('The Resultity node Agent: keeps this node on a verified configuration snapshot.')
    .version(AGENT_VERSION, '-V, --version')
    .exitOverride()
    .showHelpAfterError();

  program
    .command('run')
    .description('run the daemon: sync, apply, host the runtime bridge, serve status (SIGTERM stops cleanly)')
    .requiredOption('-c, --config <file>', 'configuration file')
    .action(async (opts: { config: string }) => {
      // Handlers first: a SIGTERM during start-up (recovering an interrupted apply) stops cleanly too.
      const stopped = new Promise<void>((resolve) => {
        process.once('SIGTERM', () => resolve());
        process.once('SIGINT', () => resolve());
      });
      const config = await loadConfig(opts.config);
      const progress = terminalProgress();
      const agent = await startAgent(config, progress ? { onProgress: progress } : {});
      await stopped;
      await agent.stop();
    });

  program
    .command('sync')
    .description('run one sync cycle: exit 0 when converged or nothing is new, 1 when refused or failed')
    .requiredOption('-c, --config <file>', 'configuration file')
    .option('--once', 'one cycle (the only mode of this command)', true)
    .action(async (opts: { config: string }) => {
      const config = await loadConfig(opts.config);
      await assertHostPaths(config);
      const lock = await acquireLock(config.state_dir, namespacedProcesses(dockerContainerLiveness(config.docker.socket_path)));
      try {
        const { parts } = await oneShot(config);
        const controller = new AbortController();
        const abort = () => controller.abort();
        process.once('SIGTERM', abort);
        process.once('SIGINT', abort);
        const recovered = await parts.engine.recover(controller.signal);
        const outcome = await parts.engine.syncOnce(controller.signal);
        const described = describeOutcome(outcome);
        if (!described.ok) throw new ExitError(1, described.line);
        if (recovered && recovered.result !== 'applied') process.stderr.write(`recovered an interrupted apply: ${outcomeCode(recovered)}\n`);
        process.stdout.write(`${described.line}\n`);
      } finally {
        await lock.release();
      }
    });

  program
    .command('status')
    .description('show the applied snapshot, last check and error, containers, models, flags and pending update')
    .requiredOption('-c, --config <file>', 'configuration file')
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const config = await loadConfig(opts.config);
      const { parts, applier } = await oneShot(config, { readOnly: true });
      const report = await collectStatus(parts, applier);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderStatus(report)}\n`);
    });

  program
    .command('plan')
    .description('print the steps an apply would run: of ENVELOPE, or of what the origin names as latest')
    .requiredOption('-c, --config <file>', 'configuration file')
    .argument('[envelope]', 'a snapshot envelope file')
    .action(async (envelope: string | undefined, opts: { config: string }) => {
      const config = await loadConfig(opts.config);
      const { parts } = await oneShot(config, { readOnly: true });
      let bytes: Uint8Array;
      let expected: string | undefined;
      if (envelope !== undefined) {
        bytes = await readFileBounded(envelope, config.limits.max_snapshot_bytes);
      } else {
        const latest = await parts.origin.latest(null);
        if (latest.status !== 'ok') throw new AgentError('HTTP_STATUS', 'the origin answered 304 to a request without an ETag');
        expected = latest.hint.config_digest;
        bytes = await parts.origin.snapshot(expected);
      }
      const verified = await parts.engine.verifyEnvelope(bytes, { ...(expected ? { expectedDigest: expected } : {}), online: envelope === undefined });
      const lines = await parts.engine.planFor({ snapshot: verified.snapshot, digest: verified.digest });
      process.stdout.write(`plan for ${verified.digest} (sequence ${verified.snapshot.sequence}):\n`);
      process.stdout.write(lines.length === 0 ? '  nothing to do\n' : `${lines.map((l, i) => `  ${i + 1}. ${l}`).join('\n')}\n`);
    });

  program
    .command('standby')
    .description(
      'prove this Agent could take over the node, changing nothing: configuration valid, state readable, engine reachable, the applied snapshot verifies and plans',
    )
    .requiredOption('-c, --config <file>', 'configuration file')
    .action(async (opts: { config: string }) => {
      const config = await loadConfig(opts.config);
      // Read-only: a predecessor holds the lock and may be writing; nothing here takes or writes it.
      const { parts, applier } = await oneShot(config, { readOnly: true });
      const state = await parts.engine.readState();
      await applier.observe();
      if (state.applied === null) {
        process.stdout.write('standby ok: nothing applied yet\n');
        return;
      }
      const bytes = await parts.store.getEnvelope(state.applied.digest);
      if (bytes === null) throw new AgentError('STATE_CORRUPT', `the applied envelope ${state.applied.digest} is not in the state directory`);
      const verified = await parts.engine.verifyEnvelope(bytes, { expectedDigest: state.applied.digest });
      const lines = await parts.engine.planFor({ snapshot: verified.snapshot, digest: verified.digest });
      process.stdout.write(`standby ok: ${verified.digest} (sequence ${verified.snapshot.sequence}) verifies; its plan has ${lines.length} step(s)\n`);
    });

  program
    .command('rollback')
    .description('go back to a verified snapshot from history (audited; pinned until the network publishes a newer sequence)')
    .requiredOption('-c, --config <file>', 'configuration file')
    .option('--to <digest>', 'the digest to go back to, sha256:<64 hex> (default: the previously applied one)')
    .action(async (opts: { config: string; to?: string }) => {
      // Checked before anything else: the digest names a file in the state directory.
      if (opts.to !== undefined) checkConfigDigest(opts.to, '--to');
      const config = await loadConfig(opts.config);
      let lock: Awaited<ReturnType<typeof acquireLock>>;
      try {
        lock = await acquireLock(config.state_dir, namespacedProcesses(dockerContainerLiveness(config.docker.socket_path)));
      } catch (error) {
        // A running daemon does the rollback itself, so it stays the one writer of the state.
        if (errorCode(error) !== 'LOCKED') throw error;
        const outcome = (await callDaemon(config, '/v1/rollback', opts.to === undefined ? {} : { to: opts.to }, error)) as SyncOutcome;
        const described = describeOutcome(outcome);
        if (!described.ok) throw new ExitError(1, described.line);
        process.stdout.write(`rolled back by the running daemon: ${described.line}\n`);
        return;
      }
      try {
        const { parts } = await oneShot(config);
        const outcome = await parts.engine.rollback(opts.to);
        const described = describeOutcome(outcome);
        if (!described.ok) throw new ExitError(1, described.line);
        process.stdout.write(`rolled back: ${described.line}\n`);
      } finally {
        await lock.release();
      }
    });

  program
    .command('unpin')
    .description("lift the pin of an operator's rollback (audited); the next sync follows the network again")
    .requiredOption('-c, --config <file>', 'configuration file')
    .action(async (opts: { config: string }) => {
      const config = await loadConfig(opts.config);
      let lock: Awaited<ReturnType<typeof acquireLock>>;
      let outcome: UnpinOutcome;
      try {
        lock = await acquireLock(config.state_dir, namespacedProcesses(dockerContainerLiveness(config.docker.socket_path)));
      } catch (error) {
        if (errorCode(error) !== 'LOCKED') throw error;
        outcome = (await callDaemon(config, '/v1/unpin', {}, error)) as UnpinOutcome;
        process.stdout.write(
          outcome.unpinned ? `unpinned by the running daemon: ${outcome.digest} (was pinned until a sequence above ${outcome.untilAbove})\n` : 'not pinned\n',
        );
        return;
      }
      try {
        const { parts } = await oneShot(config);
        outcome = await parts.engine.unpin();
      } finally {
        await lock.release();
      }
      process.stdout.write(outcome.unpinned ? `unpinned ${outcome.digest} (was pinned until a sequence above ${outcome.untilAbove})\n` : 'not pinned\n');
    });

  program
    .command('history')
    .description('list the verified snapshots kept in the state directory')
    .requiredOption('-c, --config <file>', 'configuration file')
    .option('--json', 'print JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      const config = await loadConfig(opts.config);
      const { parts } = await oneShot(config, { readOnly: true });
      const state = await parts.engine.readState();
      const rows = [...state.history].sort((a, b) => b.sequence - a.sequence);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      const lines = rows.map((h) => {
        const mark = h.digest === state.applied?.digest ? '*' : ' ';
        return `${mark} ${String(h.sequence).padStart(8)}  ${h.digest}  verified ${h.verified_at}  ${h.applied_at ? `applied ${h.applied_at}` : 'never applied'}`;
      });
      process.stdout.write(lines.length === 0 ? 'no verified snapshots yet\n' : `${lines.join('\n')}\n(* = applied)\n`);
    });

  const audit = program.command('audit').description('the append-only audit log');
  audit
    .command('verify')
    .description('check the hash chain of the audit log and name the first broken entry')
    .requiredOption('-c, --config <file>', 'configuration file')
    .action(async (opts: { config: string }) => {
      const config = await loadConfig(opts.config);
      const path = statePaths(config.state_dir).audit;
      // state.json anchors the head: without it, a log cut at the end or rewritten whole still chains.
      const anchor = await new StateStore(config.state_dir)
        .read()
        .then((state) => state.audit_head)
        .catch((error: unknown) => {
          process.stderr.write(`warning: ${errorCode(error)}: ${errorMessage(error)}; checking the chain without its anchor\n`);
          return null;
        });
      const result = await verifyAuditFile(path, anchor);
      if (!result.ok) {
        throw new ExitError(1, `AUDIT_BROKEN: ${path} line ${result.line}${result.seq === null ? '' : ` (seq ${result.seq})`}: ${result.reason}`);
      }
      process.stdout.write(`audit log intact: ${result.entries} entries, head ${result.head}\n`);
    });

  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    if (error instanceof ExitError) {
      process.stderr.write(`${error.message}\n`);
      return error.exitCode;
    }
    const code = errorCode(error);
    process.stderr.write(`${code}: ${errorMessage(error)}\n`);
    return code === 'CONFIG_INVALID' || code === 'USAGE' || code === 'LOCKED' || code === 'PATHS_NOT_SHARED' ? 2 : 1;
  }
}

process.exitCode = await main(process.argv);
