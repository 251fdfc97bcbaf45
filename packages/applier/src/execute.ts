import {
  MANAGED_BY,
  assertDefinitionAllowed,
  assertRegistryAllowed,
  canonicalDefinition,
  definitionHash,
  hasRepoDigest,
  labelKeys,
  parseDefinition,
} from './definition.js';
import { ApplyError, fail, messageOf } from './errors.js';
import { fetchModel } from './fetch.js';
import type { ApplierPorts, EngineContainer, ModelIndexEntry } from './ports.js';
import { listManaged } from './state.js';
import type { ApplierPolicy, ApplyReport, ParticipationFlags, ProgressEvent, Step, StepKind } from './types.js';

/** Options of `execute`. */
export interface ExecuteOptions {
  policy: ApplierPolicy;
  /** Honoured between steps and inside downloads, pulls and waits. */
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
  onStep?: (step: Step, index: number) => void;
  /** Seconds a container gets to stop before it is killed, default 10. */
  stopTimeoutSeconds?: number;
  /** How long a container without a health check must keep running to count as up, default 2000 ms. */
  stableMs?: number;
  /** Pause between status checks while waiting, default 250 ms. */
  pollMs?: number;
  /** How long rollback waits for a restored container to run again, default 30 s. */
  rollbackWaitMs?: number;
}

const CONTAINER_KINDS: ReadonlySet<StepKind> = new Set(['create', 'stop', 'remove', 'start']);
const INDEX_KINDS: ReadonlySet<StepKind> = new Set(['activate-model', 'remove-model']);

interface Context {
  ports: ApplierPorts;
  options: ExecuteOptions;
  ids: Map<string, string>;
  mutating: number;
  droppedMirrors: ApplyReport['droppedMirrors'];
}

const keyOf = (m: { name: string; version: string }) => `${m.name}@${m.version}`;

/** The cause's code for a step that failed with something other than an ApplyError. */
function codeFor(step: Step): ApplyError['code'] {
  switch (step.kind) {
    case 'pull-image':
      return 'PULL_FAILED';
    case 'fetch-model':
      return 'DOWNLOAD_FAILED';
    case 'create':
    case 'start':
    case 'wait-healthy':
      return 'CONTAINER_FAILED';
    case 'stop':
    case 'remove':
      return 'ENGINE_FAILED';
    default:
      return 'STORE_FAILED';
  }
}

function toApplyError(error: unknown, step: Step, signal: AbortSignal | undefined): ApplyError {
  if (error instanceof ApplyError) return error;
  if (signal?.aborted) return new ApplyError('ABORTED', `cancelled during ${step.kind}`, { cause: error, step });
  return new ApplyError(codeFor(step), `${step.kind} failed: ${messageOf(error)}`, { cause: error, step });
}

/** Checks every step against the policy before anything runs, so a refusal changes nothing. */
function preflight(steps: Step[], policy: ApplierPolicy): void {
  for (const step of steps) {
    try {
      if (!Object.hasOwn(executors, (step as { kind?: unknown }).kind as string)) {
        fail('INVALID_STEP', `expected a step kind among ${Object.keys(executors).join(', ')}, found ${JSON.stringify((step as { kind?: unknown }).kind)}`);
      }
      if (step.kind === 'pull-image') assertRegistryAllowed(step.image, policy);
      if (step.kind === 'create') {
        assertRegistryAllowed(step.definition.image, policy);
        assertDefinitionAllowed(step.name, step.definition, policy);
        if (definitionHash(step.definition) !== step.definitionHash) {
          fail('INVALID_STEP', `create ${step.name}: the definition does not hash to ${step.definitionHash}`);
        }
      }
    } catch (error) {
      throw (error as ApplyError).withOutcome(step, false);
    }
  }
}

async function pullImage(step: Extract<Step, { kind: 'pull-image' }>, ctx: Context): Promise<void> {
  const { engine } = ctx.ports;
  const reference = `${step.image}@${step.digest}`;
  const local = await engine.imageRepoDigests(reference);
  if (local !== null && hasRepoDigest(local, step.image, step.digest)) return;
  ctx.mutating++;
  try {
    await engine.pullImage(reference, {
      ...(ctx.options.signal ? { signal: ctx.options.signal } : {}),
      onProgress: (done, total) => ctx.options.onProgress?.({ kind: 'image', name: `${step.image}:${step.tag}`, bytesDone: done, bytesTotal: total }),
    });
  } catch (error) {
    if (error instanceof ApplyError) throw error;
    if (ctx.options.signal?.aborted) fail('ABORTED', `pull of ${reference} was cancelled`, error);
    const message = messageOf(error);
    if (/verification failed|digest (did not|does not) match|unexpected digest|digest mismatch/i.test(message)) {
      fail('DIGEST_MISMATCH', `image ${reference}: the registry's content does not have digest ${step.digest}: ${message}`, error);
    }
    fail('PULL_FAILED', `could not pull ${reference}: ${message}`, error);
  }
  const pulled = await engine.imageRepoDigests(reference);
  if (pulled === null || !hasRepoDigest(pulled, step.image, step.digest)) {
    fail('DIGEST_MISMATCH', `image ${reference}: expected a repo digest ${step.image}@${step.digest}, the pulled image has ${JSON.stringify(pulled ?? [])}`);
  }
}

async function waitHealthy(containerName: string, timeoutMs: number, ctx: Context, stableMs: number): Promise<void> {
  const { engine, clock } = ctx.ports;
  const signal = ctx.options.signal;
  const deadline = clock.now() + timeoutMs;
  const pollMs = ctx.options.pollMs ?? 250;
  let runningSince: number | null = null;
  // A container made by this apply must never have restarted; an old one restarted now must not restart again.
  let restartsBefore: number | null = ctx.ids.has(containerName) ? 0 : null;
  for (;;) {
    const status = await engine.inspectContainer(ctx.ids.get(containerName) ?? containerName);
    if (status === null) fail('CONTAINER_FAILED', `container ${containerName} disappeared while it was expected to run`);
    restartsBefore ??= status.restartCount;
    if (status.restarting || status.restartCount > restartsBefore || (!status.running && status.state !== 'created')) {
      fail(
        'CONTAINER_FAILED',
        `container ${containerName}: expected it to keep running, it is ${status.state}` +
          `${status.exitCode === null ? '' : ` (exit code ${status.exitCode})`}` +
          `${status.restartCount > restartsBefore ? ` after ${status.restartCount - restartsBefore} restart(s)` : ''}${status.error ? `: ${status.error}` : ''}`,
      );
    }
    if (status.health === 'unhealthy') fail('CONTAINER_FAILED', `container ${containerName} failed its health check`);
    const now = clock.now();
    if (status.running) {
      if (status.health === 'healthy') return;
      if (status.health === 'none') {
        runningSince ??= now;
        if (now - runningSince >= stableMs) return;
      }
    }
    if (now >= deadline) {
      fail('HEALTH_TIMEOUT', `container ${containerName}: not running and healthy within ${timeoutMs} ms (state ${status.state}, health ${status.health})`);
    }
    try {
      await clock.sleep(Math.min(pollMs, Math.max(1, deadline - now)), signal);
    } catch (error) {
      fail('ABORTED', `cancelled while waiting for ${containerName}`, error);
    }
  }
}

async function writeIndex(ctx: Context, entries: ModelIndexEntry[]): Promise<void> {
  ctx.mutating++;
  await ctx.ports.models.writeIndex(entries);
}

/** One function per step kind: the table balena-supervisor calls its executors. */
const executors: { [K in StepKind]: (step: Extract<Step, { kind: K }>, ctx: Context) => Promise<void> } = {
  'fetch-model': async (step, ctx) => {
    if (await ctx.ports.models.hasBlob(step.model.sha256)) return;
    ctx.mutating++;
    const report = await fetchModel(step.model, ctx.ports, {
      ...(ctx.options.signal ? { signal: ctx.options.signal } : {}),
      onProgress: (done, total, detail) =>
        ctx.options.onProgress?.({
          kind: 'model',
          name: `${step.model.name}@${step.model.version}`,
          bytesDone: done,
          bytesTotal: total,
          ...(detail === undefined ? {} : { bytesPerSecond: detail.bytesPerSecond }),
          ...(detail?.mirrors === undefined ? {} : { mirrors: detail.mirrors }),
        }),
    });
    if (report.dropped.length > 0) ctx.droppedMirrors.push({ model: keyOf(step.model), mirrors: report.dropped });
  },
  'pull-image': pullImage,
  create: async (step, ctx) => {
    const keys = labelKeys(ctx.options.policy);
    ctx.mutating++;
    const id = await ctx.ports.engine.createContainer({
      containerName: step.containerName,
      definition: step.definition,
      labels: {
        [keys.managedBy]: MANAGED_BY,
        [keys.name]: step.name,
        [keys.definitionHash]: step.definitionHash,
        [keys.definition]: canonicalDefinition(step.definition),
        [keys.configDigest]: step.configDigest,
        [keys.tag]: step.tag,
      },
    });
    ctx.ids.set(step.containerName, id);
  },
  start: async (step, ctx) => {
    ctx.mutating++;
    await ctx.ports.engine.startContainer(ctx.ids.get(step.containerName) ?? step.containerName);
  },
  'wait-healthy': (step, ctx) => waitHealthy(step.containerName, step.timeoutMs, ctx, ctx.options.stableMs ?? 2000),
  stop: async (step, ctx) => {
    ctx.mutating++;
    await ctx.ports.engine.stopContainer(step.id, ctx.options.stopTimeoutSeconds ?? 10);
  },
  remove: async (step, ctx) => {
    ctx.mutating++;
    await ctx.ports.engine.removeContainer(step.id);
  },
  'activate-model': async (step, ctx) => {
    const { models } = ctx.ports;
    if (!(await models.hasBlob(step.model.sha256))) {
      fail('STORE_FAILED', `activate ${keyOf(step.model)}: expected blob sha256/${step.model.sha256} in the store, it is missing`);
    }
    const index = await models.readIndex();
    const current = index.find((e) => keyOf(e) === keyOf(step.model));
    if (current?.sha256 === step.model.sha256) return;
    const next = index.filter((e) => keyOf(e) !== keyOf(step.model));
    next.push({ name: step.model.name, version: step.model.version, sha256: step.model.sha256, size: step.model.size });
    await writeIndex(ctx, next);
  },
  'remove-model': async (step, ctx) => {
    const { models } = ctx.ports;
    const index = await models.readIndex();
    const next = index.filter((e) => !(keyOf(e) === keyOf(step.model) && e.sha256 === step.model.sha256));
    if (next.length !== index.length) await writeIndex(ctx, next);
    if (step.deleteBlob && !next.some((e) => e.sha256 === step.model.sha256) && (await models.hasBlob(step.model.sha256))) {
      ctx.mutating++;
      await models.removeBlob(step.model.sha256);
    }
  },
  'set-flags': async (step, ctx) => {
    ctx.mutating++;
    await ctx.ports.flags.write(step.flags);
  },
};

interface Before {
  containers: { raw: EngineContainer; running: boolean }[];
  index: ModelIndexEntry[];
  flags: ParticipationFlags | null;
}

/**
 * Puts back what was there before: removes containers this apply created, starts the old ones
 * it stopped, recreates from their recorded definition any it removed, restores the model index
 * (minus entries whose files are gone) and the flags. Best effort on every item; the first
 * error is rethrown at the end so the caller knows the node needs attention.
 */
async function rollback(before: Before, ctx: Context, touched: { containers: boolean; index: boolean; flags: boolean }): Promise<void> {
  const { engine, models, flags, clock } = ctx.ports;
  const errors: unknown[] = [];
  const attempt = async (what: () => Promise<unknown>) => {
    try {
      await what();
    } catch (error) {
      errors.push(error);
    }
  };
  if (touched.containers) {
    const now = await listManaged(ctx.ports, ctx.options.policy);
    const beforeIds = new Set(before.containers.map((c) => c.raw.id));
    for (const c of now) if (!beforeIds.has(c.raw.id)) await attempt(() => engine.removeContainer(c.raw.id));
    const toWait: string[] = [];
    for (const old of before.containers) {
      const present = now.find((c) => c.raw.id === old.raw.id);
      if (present === undefined) {
        await attempt(async () => {
          const observed = parseDefinition(old.raw.labels[labelKeys(ctx.options.policy).definition]);
          if (observed === null) throw new Error(`container ${old.raw.name} has no recorded definition to recreate it from`);
          const id = await engine.createContainer({ containerName: old.raw.name, definition: observed, labels: old.raw.labels });
          if (old.running) {
            await engine.startContainer(id);
            toWait.push(id);
          }
        });
      } else if (old.running && !present.observed.running) {
        await attempt(async () => {
          await engine.startContainer(old.raw.id);
          toWait.push(old.raw.id);
        });
      }
    }
    const deadline = clock.now() + (ctx.options.rollbackWaitMs ?? 30_000);
    for (const id of toWait) {
      await attempt(async () => {
        for (;;) {
          const status = await engine.inspectContainer(id);
          if (status?.running) return;
          if (clock.now() >= deadline) throw new Error(`restored container ${id} is not running (state ${status?.state ?? 'gone'})`);
          await clock.sleep(ctx.options.pollMs ?? 250);
        }
      });
    }
  }
  if (touched.index) {
    await attempt(async () => {
      const blobs = new Set(await models.listBlobs());
      await models.writeIndex(before.index.filter((e) => blobs.has(e.sha256)));
    });
  }
  if (touched.flags) await attempt(() => flags.write(before.flags));
  if (errors.length > 0) throw errors[0];
}

/**
 * Runs planned steps. Every image and model is fetched and verified by the steps that come
 * first in a plan, before any running container is touched; if anything fails after the node
 * was changed, the previous containers, model index and flags are restored and an ApplyError
 * naming the step (with `rolledBack`) is thrown.
 */
export async function execute(steps: Step[], ports: ApplierPorts, options: ExecuteOptions): Promise<ApplyReport> {
  const startedAt = ports.clock.now();
  const { policy, signal } = options;
  preflight(steps, policy);
  if (signal?.aborted) throw new ApplyError('ABORTED', 'cancelled before the first step');

  const usesEngine = steps.some((s) => CONTAINER_KINDS.has(s.kind) || s.kind === 'pull-image' || s.kind === 'wait-healthy');
  if (usesEngine) await ports.engine.ping();
  // What a rollback restores, read before anything changes.
  const before: Before = { containers: [], index: [], flags: null };
  try {
    if (usesEngine) {
      before.containers = (await listManaged(ports, policy)).map((c) => ({ raw: c.raw, running: c.observed.running }));
    }
  } catch (cause) {
    if (cause instanceof ApplyError) throw cause;
    throw new ApplyError('ENGINE_FAILED', `could not list the containers: ${messageOf(cause)}`, { cause });
  }
  try {
    before.index = await ports.models.readIndex();
    before.flags = await ports.flags.read();
  } catch (cause) {
    if (cause instanceof ApplyError) throw cause;
    throw new ApplyError('STORE_FAILED', `could not read the model index or the flags: ${messageOf(cause)}`, { cause });
  }

  // Space for every model first: refusing the third download after two succeeded helps nobody.
  const fetches = steps.filter((s): s is Extract<Step, { kind: 'fetch-model' }> => s.kind === 'fetch-model');
  if (fetches.length > 0) {
    let needed = 0;
    for (const f of fetches) {
      if (await ports.models.hasBlob(f.model.sha256)) continue;
      // A chunked download in progress sits in a sparse file: what it holds is already off the free space.
      const staged =
        f.model.chunks !== undefined && ports.chunks !== undefined
          ? await ports.chunks.staging.chunkedBytes(f.model.sha256)
          : await ports.models.partSize(f.model.sha256);
      needed += f.model.size - Math.min(f.model.size, staged);
    }
    const free = await ports.models.freeBytes();
    if (free < needed) {
      throw new ApplyError('INSUFFICIENT_SPACE', `models need ${needed} more bytes in ${ports.models.root}, ${free} are free`, {
        ...(fetches[0] ? { step: fetches[0] } : {}),
      });
    }
  }

  const ctx: Context = { ports, options, ids: new Map(), mutating: 0, droppedMirrors: [] };
  const touched = { containers: false, index: false, flags: false };
  for (const [index, step] of steps.entries()) {
    try {
      if (signal?.aborted) fail('ABORTED', `cancelled before step ${index + 1} (${step.kind})`);
      options.onStep?.(step, index);
      if (CONTAINER_KINDS.has(step.kind)) touched.containers = true;
      if (INDEX_KINDS.has(step.kind)) touched.index = true;
      if (step.kind === 'set-flags') touched.flags = true;
      await (executors[step.kind] as (s: Step, c: Context) => Promise<void>)(step, ctx);
    } catch (error) {
      const failure = toApplyError(error, step, signal);
      if (!touched.containers && !touched.index && !touched.flags) throw failure.withOutcome(step, false);
      try {
        await rollback(before, ctx, touched);
      } catch (rollbackError) {
        throw failure.withOutcome(step, false, rollbackError);
      }
      throw failure.withOutcome(step, true);
    }
  }
  return { steps: steps.length, mutatingCalls: ctx.mutating, durationMs: ports.clock.now() - startedAt, rolledBack: false, droppedMirrors: ctx.droppedMirrors };
}
