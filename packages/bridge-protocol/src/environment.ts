import { JobSchema, NAME_PATTERN, describeIssues, type Model, type Snapshot } from '@resultity/snapshot';
import { z } from 'zod';

import { ProtocolError } from './errors.js';

const safeInt = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const name = z.string().regex(NAME_PATTERN, 'must match ^[a-z0-9][a-z0-9._-]{0,62}$');

/** `sha256:` and 64 lowercase hex: the SPEC §1 config digest. */
export const CONFIG_DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
export const ConfigDigestSchema = z.string().regex(CONFIG_DIGEST_PATTERN, 'must be sha256: and 64 lowercase hex digits');

export const ActiveModelSchema = z.looseObject({
  name,
  version: z.string().min(1).max(128),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
  // Where the Agent installed the weights; the runtime loads them from here.
  path: z.string().min(1).max(4096),
});

export const RuntimeParticipationSchema = z.looseObject({
  mode: z.enum(['testnet', 'mainnet']),
  // The subclouds this node qualifies for, already evaluated by the Agent.
  subclouds: z.array(name).max(256),
});

export const RuntimeEnvironmentSchema = z.looseObject({
  digest: ConfigDigestSchema,
  sequence: safeInt,
  job: JobSchema,
  models: z
    .array(ActiveModelSchema)
    .max(1024)
    .superRefine((models, ctx) => {
      const seen = new Set<string>();
      models.forEach((model, index) => {
        if (seen.has(model.name)) ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `duplicate model name "${model.name}"` });
        seen.add(model.name);
      });
    }),
  participation: RuntimeParticipationSchema,
});

/** Everything the runtime needs from the applied snapshot: job limits, the models on disk, participation. */
export type RuntimeEnvironment = z.output<typeof RuntimeEnvironmentSchema>;
/** A model the Agent has installed and activated, with the local path of its weights. */
export type ActiveModel = z.output<typeof ActiveModelSchema>;
/** The participation flags as evaluated for this node, not the snapshot's requirements. */
export type RuntimeParticipation = z.output<typeof RuntimeParticipationSchema>;

/** Checks a value against the environment schema; throws ENVIRONMENT_INVALID naming what is wrong. */
export function parseRuntimeEnvironment(value: unknown): RuntimeEnvironment {
  const result = RuntimeEnvironmentSchema.safeParse(value);
  if (!result.success) {
    throw new ProtocolError('ENVIRONMENT_INVALID', `environment does not match the schema: ${describeIssues(result.error)}`, {
      cause: result.error,
    });
  }
  return result.data;
}

/** What the Agent knows beyond the snapshot when it builds the environment. */
export interface EnvironmentContext {
  /** The local path of an installed model's weights. */
  modelPath: (model: Model) => string;
  /** The participation flags evaluated against this node's profile. */
  participation: RuntimeParticipation;
}

/** Builds the environment the runtime is told of from an applied snapshot (pure). */
export function environmentFromSnapshot(snapshot: Snapshot, digest: string, context: EnvironmentContext): RuntimeEnvironment {
  return parseRuntimeEnvironment({
    digest,
    sequence: snapshot.sequence,
    job: snapshot.job,
    models: snapshot.models.map((model) => ({
      name: model.name,
      version: model.version,
      sha256: model.sha256,
      path: context.modelPath(model),
    })),
    participation: { mode: context.participation.mode, subclouds: [...context.participation.subclouds] },
  });
}
