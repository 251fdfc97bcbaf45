import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { writeFileAtomic } from '@resultity/node-kit';
import type { UpdateTarget } from '@resultity/snapshot';

import type { AuditSink } from './audit.js';
import { errorCode, errorMessage } from './errors.js';
import type { Logger } from './ports.js';

/** The running Agent's own container, as the engine reports it: what a successor is cloned from. */
export interface SelfContainer {
  readonly id: string;
  readonly name: string;
  /** Registry digests (`sha256:…`) of the image this container runs. */
  readonly imageDigests: readonly string[];
}

/** What a standby run of a candidate image ended with. */
export type StandbyResult =
  | { readonly ok: true; readonly output: string }
  | { readonly ok: false; readonly code: 'STANDBY_FAILED' | 'STANDBY_TIMEOUT'; readonly exitCode: number | null; readonly output: string };

/** The container engine as self-update needs it: find itself, pull, run a standby container to its end. */
export interface AgentContainersPort {
  /** This Agent's own container, or null when it does not run in one (then it never self-updates). */
  self(): Promise<SelfContainer | null>;
  /** Pulls `image@digest`; throws when the registry does not have it. */
  pull(ref: string): Promise<void>;
  /**
   * Runs `ref` with `command` on the mounts, network and environment of `self` (plus `env`),
   * waits for it to exit, then removes it. A run longer than `timeoutMs` is killed and removed.
   */
  runStandby(self: SelfContainer, ref: string, command: readonly string[], env: Readonly<Record<string, string>>, timeoutMs: number): Promise<StandbyResult>;
  /**
   * Removes the standby containers of container `selfId` and returns their ids: called at
   * start, before this run started any, so those are what an earlier run killed mid-standby
   * could not remove.
   */
  removeStandbyRuns(selfId: string): Promise<string[]>;
}

/** Failed attempts per candidate digest, kept in the state directory so a restart does not reset the budget. */
export interface AttemptStore {
  read(): Promise<Record<string, number>>;
  write(attempts: Record<string, number>): Promise<void>;
}

/** What to do about a snapshot's `updates.agent` (pure). */
export type SelfUpdateDecision =
  | { readonly kind: 'current' }
  | { readonly kind: 'not-allowed'; readonly registry: string }
  | { readonly kind: 'budget-exhausted'; readonly attempts: number }
  | { readonly kind: 'try'; readonly ref: string; readonly attempt: number };

/**
 * Decides on an update target. The running image is named by digest, not version: two builds of
 * one version are two images, and only the digest says which one runs.
 */
export function decideSelfUpdate(
  update: UpdateTarget,
  running: readonly string[],
  /** The registry of `update.image`, as the applier's `registryOf` reads it. */
  registry: string,
  allowedRegistries: readonly string[],
  attempts: Readonly<Record<string, number>>,
  retryBudget: number,
): SelfUpdateDecision {
  if (running.includes(update.digest)) return { kind: 'current' };
  if (!allowedRegistries.map((r) => r.toLowerCase()).includes(registry)) return { kind: 'not-allowed', registry };
  const done = attempts[update.digest] ?? 0;
  if (done >= retryBudget) return { kind: 'budget-exhausted', attempts: done };
  return { kind: 'try', ref: `${update.image}@${update.digest}`, attempt: done + 1 };
}

/** Where the attempts are kept: `<state_dir>/self-update.json`. */
export function fileAttemptStore(stateDir: string): AttemptStore {
  const path = join(stateDir, 'self-update.json');
  return {
    async read() {
      try {
        const value = JSON.parse(await readFile(path, 'utf8')) as { attempts?: Record<string, unknown> };
        return Object.fromEntries(Object.entries(value.attempts ?? {}).filter((e): e is [string, number] => typeof e[1] === 'number'));
      } catch {
        // Missing or unreadable: no attempt is known, and the budget starts again.
        return {};
      }
    },
    async write(attempts) {
      await writeFileAtomic(path, `${JSON.stringify({ attempts })}\n`, 0o600);
    },
  };
}

/** What the self-updater needs from the configuration and the process. */
export interface SelfUpdaterOptions {
  readonly containers: AgentContainersPort;
  readonly attempts: AttemptStore;
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly allowedRegistries: readonly string[];
  readonly retryBudget: number;
  /** The configuration file as this container sees it; the successor has the same mounts. */
  readonly configPath: string;
  /** How long a standby run may take before it counts as failed. */
  readonly standbyTimeoutMs: number;
  /** Called once a candidate has passed standby: what the hand-over starts from. */
  readonly onReady?: (ready: { update: UpdateTarget; ref: string; self: SelfContainer; attempt: number; attempts: Record<string, number> }) => Promise<void>;
}

/**
 * Follows `updates.agent`: checks the candidate image against the allowlist, pulls it by
 * digest and runs it in standby on this container's mounts (config valid, state readable,
 * engine reachable, the applied snapshot verifies and plans; nothing is written). A candidate
 * that fails is removed, audited and counted against its digest's retry budget; this Agent
 * keeps running either way.
 */
export class SelfUpdater {
  private running: Promise<void> | null = null;
  private next: { update: UpdateTarget; seenIn: string } | null = null;

  constructor(private readonly options: SelfUpdaterOptions) {}

  /**
   * Considers `update`; one consideration at a time, and a trigger that arrives meanwhile
   * replaces any other waiting one (only the newest snapshot's target matters). Never throws.
   */
  consider(update: UpdateTarget, seenIn: string): Promise<void> {
    this.next = { update, seenIn };
    this.running ??= this.drain().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async drain(): Promise<void> {
    for (let job = this.next; job !== null; job = this.next) {
      this.next = null;
      await this.run(job.update, job.seenIn).catch((error: unknown) =>
        this.options.logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'self-update: consideration failed'),
      );
    }
  }

  private async run(update: UpdateTarget, seenIn: string): Promise<void> {
    const { containers, audit, logger } = this.options;
    const self = await containers.self();
    if (self === null) {
      logger.info({ digest: update.digest }, 'self-update: this Agent does not run in a container; not updating itself');
      return;
    }
    const attempts = await this.options.attempts.read();
    // The applier (and the Docker client under it) is loaded here, not when the CLI starts.
    const { registryOf } = await import('@resultity/applier');
    const decision = decideSelfUpdate(update, self.imageDigests, registryOf(update.image), this.options.allowedRegistries, attempts, this.options.retryBudget);
    const base = { version: update.version, image: update.image, image_digest: update.digest, seen_in: seenIn };
    switch (decision.kind) {
      case 'current':
        return;
      case 'not-allowed':
        await audit.append('agent-update-failed', {
          ...base,
          stage: 'allowlist',
          code: 'REGISTRY_NOT_ALLOWED',
          message: `registry ${decision.registry} is not allowed`,
        });
        return;
      case 'budget-exhausted':
        logger.info({ digest: update.digest, attempts: decision.attempts }, 'self-update: retry budget of this digest is spent');
        return;
      case 'try':
        break;
    }
    const fail = async (stage: string, code: string, message: string, extra: Record<string, unknown> = {}) => {
      await this.options.attempts.write({ ...attempts, [update.digest]: decision.attempt });
      await audit.append('agent-update-failed', { ...base, stage, code, message: message.slice(-2000), attempt: decision.attempt, ...extra });
    };
    try {
      await containers.pull(decision.ref);
    } catch (error) {
      await fail('pull', 'PULL_FAILED', errorMessage(error));
      return;
    }
    const result = await containers.runStandby(
      self,
      decision.ref,
      ['standby', '--config', this.options.configPath],
      { RESULTITY_AGENT_IMAGE_DIGEST: update.digest },
      this.options.standbyTimeoutMs,
    );
    if (!result.ok) {
      await fail('standby', result.code, result.output, { exit_code: result.exitCode });
      return;
    }
    await audit.append('agent-standby-passed', { ...base, attempt: decision.attempt, predecessor: self.id });
    await this.options.onReady?.({ update, ref: decision.ref, self, attempt: decision.attempt, attempts });
  }
}
