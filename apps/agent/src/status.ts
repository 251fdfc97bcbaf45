import type { AgentParts } from './agent.js';
import { errorCode, errorMessage, escapeControl } from './errors.js';
import type { ApplierPort, ObservedNode, RuntimeNotifier } from './ports.js';
import { emptyState } from './state.js';
import { AGENT_VERSION } from './version.js';

/** Everything `status` shows, as JSON (`status --json`, GET /status). */
export interface StatusReport {
  network: string;
  node_id: string;
  agent_version: string;
  applied: { digest: string; sequence: number } | null;
  pinned: { digest: string; until_above: number } | null;
  latest: { digest: string; sequence: number } | null;
  last_check: string | null;
  last_success_check: string | null;
  last_error: { code: string; message: string; at: string; digest?: string | undefined } | null;
  applying: { digest: string; sequence: number } | null;
  failed_digests: { digest: string; code: string; attempts: number }[];
  containers: { name: string; image: string; state: string }[] | null;
  models: { name: string; version: string }[];
  flags: { mode: string; subclouds: readonly string[] } | null;
  engine: string;
  /** The model store's size and what collection would remove now (null when it cannot be read). */
  store: { bytes: number; collectable: { bytes: number; count: number } } | null;
  runtime: { last: { digest: string | null; outcome: string; at: string } | null; connected: { runtimeId: string; digest: string | null }[] };
  pending_update: { agent: { version: string; image: string; digest: string } | null };
}

/** Reads the state directory, the applied snapshot and (when reachable) the container engine. */
export async function collectStatus(parts: AgentParts, applier: ApplierPort, notifier?: RuntimeNotifier): Promise<StatusReport> {
  // Through the engine: a corrupt state.json is rebuilt by the lock holder (and reported as
  // STATE_CORRUPT); a read-only reader reports it as found.
  const state = await parts.engine.readState().catch((error: unknown) => {
    if (errorCode(error) !== 'STATE_CORRUPT') throw error;
    return { ...emptyState(), last_error: { code: 'STATE_CORRUPT', message: errorMessage(error), at: new Date().toISOString() } };
  });
  const journal = await parts.store.readJournal();
  const applied = state.applied === null ? null : await parts.engine.appliedTarget().catch(() => null);
  let observed: ObservedNode | null = null;
  let engine = 'ok';
  try {
    observed = await applier.observe();
  } catch (error) {
    engine = `${errorCode(error)}: ${errorMessage(error)}`;
  }
  // With an envelope missing, nothing is collectable: collection would refuse too.
  const kept = await parts.engine.keptTargets().catch(() => null);
  const usage = kept === null ? null : 'missing' in kept ? null : await applier.storeUsage(kept.targets).catch(() => null);
  return {
    network: parts.config.network,
    node_id: parts.config.node_id,
    agent_version: AGENT_VERSION,
    applied: state.applied,
    pinned: state.pinned ? { digest: state.pinned.digest, until_above: state.pinned.until_above } : null,
    latest: state.latest,
    last_check: state.last_check,
    last_success_check: state.last_success_check,
    last_error: state.last_error,
    applying: journal ? journal.to : null,
    failed_digests: Object.entries(state.failures)
      .filter(([, f]) => f.failed)
      .map(([digest, f]) => ({ digest, code: f.code, attempts: f.attempts })),
    containers: observed ? [...observed.containers] : null,
    models: observed ? [...observed.models] : (applied?.snapshot.models.map((m) => ({ name: m.name, version: m.version })) ?? []),
    flags: observed?.flags ?? (applied ? await applier.flags(applied).catch(() => null) : null),
    engine,
    store: usage === null ? null : { bytes: usage.bytes, collectable: { bytes: usage.collectable.bytes, count: usage.collectable.count } },
    runtime: { last: state.runtime, connected: notifier ? [...notifier.connected()] : [] },
    pending_update: {
      agent: state.pending_agent_update
        ? { version: state.pending_agent_update.version, image: state.pending_agent_update.image, digest: state.pending_agent_update.digest }
        : null,
    },
  };
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** The readable table of `status`. */
export function renderStatus(report: StatusReport): string {
  const rows: [string, string][] = [
    ['network', report.network],
    ['node', report.node_id],
    ['agent version', report.agent_version],
    ['applied digest', report.applied?.digest ?? '(none)'],
    ['applied sequence', report.applied ? String(report.applied.sequence) : '-'],
    ['pinned', report.pinned ? `yes, until a sequence above ${report.pinned.until_above}` : 'no'],
    ['origin latest', report.latest ? `${report.latest.sequence} ${report.latest.digest}` : '-'],
    ['applying', report.applying ? `${report.applying.sequence} ${report.applying.digest}` : '-'],
    ['last check', report.last_check ?? 'never'],
    ['last successful check', report.last_success_check ?? 'never'],
    ['last error', report.last_error ? `${report.last_error.code}: ${report.last_error.message}` : '-'],
    ['failed digests', report.failed_digests.length === 0 ? '-' : report.failed_digests.map((f) => `${f.digest} (${f.code} x${f.attempts})`).join(', ')],
    ['container engine', report.engine],
    [
      'containers',
      report.containers === null
        ? '(engine not reachable)'
        : report.containers.length === 0
          ? '(none)'
          : report.containers.map((c) => `${c.name} [${c.state}] ${c.image}`).join('\n'),
    ],
    ['models', report.models.length === 0 ? '(none)' : report.models.map((m) => `${m.name}@${m.version}`).join(', ')],
    ['flags', report.flags ? `mode ${report.flags.mode}; subclouds ${report.flags.subclouds.join(', ') || '(none)'}` : '-'],
    [
      'model store',
      report.store ? `${mib(report.store.bytes)}; collectable ${mib(report.store.collectable.bytes)} in ${report.store.collectable.count} file(s)` : '-',
    ],
    ['runtime', report.runtime.last ? `${report.runtime.last.outcome} for ${report.runtime.last.digest ?? '-'} at ${report.runtime.last.at}` : '-'],
    ['pending update', report.pending_update.agent ? `agent ${report.pending_update.agent.version} (${report.pending_update.agent.image})` : 'none'],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows
    .map(([k, v]) => {
      const [first, ...rest] = v.split('\n');
      // Values quote what the network sent (error messages, image names): escaped line by line.
      return [`${k.padEnd(width)}  ${escapeControl(first ?? '')}`, ...rest.map((line) => `${' '.repeat(width)}  ${escapeControl(line)}`)].join('\n');
    })
    .join('\n');
}
