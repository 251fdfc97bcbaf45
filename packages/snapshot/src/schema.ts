import { z } from 'zod';

import { isRfc3339Utc } from './timestamp.js';

/** The snapshot major this code understands (SPEC §3). A greater one is refused. */
export const SNAPSHOT_SCHEMA_MAJOR = 1;
/** The trust root major this code understands (SPEC §4). */
export const ROOT_SCHEMA_MAJOR = 1;

export const SNAPSHOT_PAYLOAD_TYPE = 'application/vnd.resultity.snapshot+json';
export const ROOT_PAYLOAD_TYPE = 'application/vnd.resultity.root+json';

export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const IMAGE_DIGEST = /^sha256:[0-9a-f]{64}$/;

const name = z.string().regex(NAME_PATTERN, 'must match ^[a-z0-9][a-z0-9._-]{0,62}$');
// z.int() is already bounded to the safe integers (SPEC §3: all integers fit in 2^53); one
// check fewer per number than z.number().int().max(...), which counts on 1100 numbers a parse.
const safeInt = z.int().min(0);
const positiveInt = z.int().min(1);
const timestamp = z.string().refine(isRfc3339Utc, 'must be an RFC 3339 UTC timestamp ending in Z, every field in range');
/** SPEC §3 bounds: a day, in seconds or in milliseconds. */
const seconds = z.int().min(1).max(86_400);
const milliseconds = z.int().min(1).max(86_400_000);
// A shape check only (scheme, a host, no whitespace): the downloader parses each URL when it
// uses it, and a mirror that does not parse is skipped like one that does not answer.
const HTTP_URL = /^https?:\/\/[^\s/?#]+(?:[/?#]\S*)?$/;
const httpUrl = z.string().max(4096).regex(HTTP_URL, 'must be an http(s) URL');
const port = z.number().int().min(1).max(65535);

/** Lists whose items are named must not name anything twice (SPEC §3). */
function uniqueBy<T>(key: (item: T) => string, what: string) {
  return (items: T[], ctx: z.RefinementCtx) => {
    const seen = new Set<string>();
    items.forEach((item, index) => {
      const k = key(item);
      if (seen.has(k)) {
        ctx.addIssue({ code: 'custom', message: `duplicate ${what} "${k}"`, path: [index] });
      }
      seen.add(k);
    });
  };
}

export const ModelSchema = z.looseObject({
  name,
  version: z.string().min(1).max(128),
  sha256: z.string().regex(HEX64, 'must be 64 lowercase hex digits'),
  size: safeInt,
  urls: z.array(httpUrl).min(1).max(16),
  chunks: z
    .looseObject({
      size: z
        .int()
        .min(2 ** 20)
        .max(2 ** 30)
        .refine((n) => (n & (n - 1)) === 0, 'must be a power of two'),
      sha256: z.string().regex(HEX64, 'must be 64 lowercase hex digits'),
    })
    .optional(),
});

export const PortSchema = z.looseObject({
  container: port,
  host: port,
  protocol: z.enum(['tcp', 'udp']),
});

export const RESTART_POLICIES = ['no', 'on-failure', 'always', 'unless-stopped'] as const;

export const ContainerSchema = z.looseObject({
  name,
  image: z.string().min(1).max(512),
  tag: z.string().min(1).max(128),
  digest: z.string().regex(IMAGE_DIGEST, 'must be sha256: and 64 lowercase hex digits'),
  // SPEC §3 shows these in every example but does not say they may be left out; an empty
  // value is the only reading that changes nothing, so that is what a missing one means.
  env: z.record(z.string(), z.string()).default({}),
  command: z.array(z.string()).default([]),
  ports: z.array(PortSchema).default([]),
  restart: z.enum(RESTART_POLICIES).default('always'),
  // SPEC §3/§6: what the runtime container gets of the node; nothing unless asked for.
  bridge: z.boolean().default(false),
  models: z.boolean().default(false),
  gpus: z.union([z.literal('all'), positiveInt]).optional(),
  shm_size_mb: positiveInt.optional(),
});

export const VALIDATION_OPS = ['eq', 'ne', 'lt', 'lte', 'gt', 'gte', 'in', 'not_in', 'max_length'] as const;

const jsonScalar = z.union([z.string(), z.number(), z.boolean(), z.null()]);

export const ValidationRuleSchema = z
  .looseObject({
    field: z.string().regex(/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/, 'must be a dot path of field names'),
    op: z.enum(VALIDATION_OPS),
    value: z.union([jsonScalar, z.array(jsonScalar)]),
  })
  .superRefine((rule, ctx) => {
    const isList = Array.isArray(rule.value);
    const wantsList = rule.op === 'in' || rule.op === 'not_in';
    const wantsNumber = ['lt', 'lte', 'gt', 'gte', 'max_length'].includes(rule.op);
    if (wantsList !== isList) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `op ${rule.op} needs ${wantsList ? 'an array' : 'a single value'}` });
    } else if (wantsNumber && typeof rule.value !== 'number') {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `op ${rule.op} needs a number` });
    }
  });

export const JobSchema = z.looseObject({
  max_tokens: positiveInt,
  max_queue_size: safeInt,
  execution_timeout_ms: positiveInt,
  validation: z.array(ValidationRuleSchema).max(256).optional(),
});

export const SubcloudSchema = z.looseObject({
  id: name,
  require: z
    .looseObject({
      min_vram_gb: z.number().min(0).optional(),
      regions: z.array(z.string()).optional(),
      gpus: z.array(z.string()).optional(),
    })
    .default({}),
});

export const ParticipationSchema = z.looseObject({
  mode: z.enum(['testnet', 'mainnet']),
  subclouds: z.array(SubcloudSchema).superRefine(uniqueBy((s) => s.id, 'subcloud id')),
});

export const TtlSchema = z
  .looseObject({
    poll_interval_s: seconds,
    heartbeat_interval_s: seconds,
    retry_initial_ms: milliseconds,
    retry_max_ms: milliseconds,
    cache_ttl_s: seconds,
  })
  .refine((t) => t.retry_max_ms >= t.retry_initial_ms, {
    message: 'retry_max_ms must not be below retry_initial_ms',
    path: ['retry_max_ms'],
  });

export const UpdateTargetSchema = z.looseObject({
  version: z.string().min(1).max(128),
  image: z.string().min(1).max(512),
  digest: z.string().regex(IMAGE_DIGEST, 'must be sha256: and 64 lowercase hex digits'),
});

/** Every section of a snapshot but its models; see SnapshotSchema and SnapshotSchemaModelsChecked. */
const snapshotShape = {
  schema: z.literal(SNAPSHOT_SCHEMA_MAJOR),
  network: name,
  sequence: safeInt,
  issued_at: timestamp,
  expires_at: timestamp,
  runtime: z.looseObject({
    containers: z.array(ContainerSchema).superRefine(uniqueBy((c) => c.name, 'container name')),
  }),
  job: JobSchema,
  participation: ParticipationSchema,
  ttl: TtlSchema,
  updates: z.looseObject({ agent: UpdateTargetSchema.optional(), runtime: UpdateTargetSchema.optional() }).optional(),
  rollout: z.looseObject({ percent: z.int().min(0).max(100).default(100) }).optional(),
};

const expiresAfterIssued = (s: { issued_at: string; expires_at: string }) => Date.parse(s.expires_at) > Date.parse(s.issued_at);
const expiresAfterIssuedIssue = { message: 'expires_at must be after issued_at', path: ['expires_at'] };

export const SnapshotSchema = z
  .looseObject({
    ...snapshotShape,
    models: z.array(ModelSchema).superRefine(uniqueBy((m) => m.name, 'model name')),
  })
  .refine(expiresAfterIssued, expiresAfterIssuedIssue);

/**
 * SnapshotSchema for a value whose models isModelListValid has already accepted: zod costs
 * about 2 µs a model, which on a snapshot of hundreds of models was the largest share of the
 * accept pipeline after the signature check. Only parseSnapshotValue uses it.
 */
export const SnapshotSchemaModelsChecked = z
  .looseObject({ ...snapshotShape, models: z.array(z.unknown()) })
  .refine(expiresAfterIssued, expiresAfterIssuedIssue);

const URL_MAX = 4096;

/**
 * The same rules as ModelSchema (and the uniqueness of model names), written by hand for the
 * accept path. A true answer means ModelSchema would accept every item unchanged (a model has
 * no defaults); a false one proves nothing, and the caller runs ModelSchema to say what is
 * wrong. A property test holds the two to the same answers.
 */
export function isModelListValid(models: unknown): models is Model[] {
  if (!Array.isArray(models)) return false;
  const names = new Set<string>();
  for (const model of models) {
    if (!isModelValid(model) || names.has(model.name)) return false;
    names.add(model.name);
  }
  return true;
}

function isModelValid(value: unknown): value is Model {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const { name, version, sha256, size, urls, chunks } = value as Record<string, unknown>;
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) return false;
  if (typeof version !== 'string' || version.length < 1 || version.length > 128) return false;
  if (typeof sha256 !== 'string' || !HEX64.test(sha256)) return false;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return false;
  if (!Array.isArray(urls) || urls.length < 1 || urls.length > 16) return false;
  for (const url of urls) {
    if (typeof url !== 'string' || url.length > URL_MAX || !HTTP_URL.test(url)) return false;
  }
  if (chunks === undefined) return true;
  if (chunks === null || typeof chunks !== 'object' || Array.isArray(chunks)) return false;
  const c = chunks as Record<string, unknown>;
  return isChunkSize(c.size) && typeof c.sha256 === 'string' && HEX64.test(c.sha256);
}

function isChunkSize(n: unknown): boolean {
  return typeof n === 'number' && Number.isInteger(n) && n >= 2 ** 20 && n <= 2 ** 30 && (n & (n - 1)) === 0;
}

export const RootKeySchema = z.looseObject({
  keyid: z.string().regex(HEX64, 'must be 64 lowercase hex digits'),
  public_key: z.string().min(1).max(64),
});

export const RootSchema = z
  .looseObject({
    schema: z.literal(ROOT_SCHEMA_MAJOR),
    network: name,
    version: positiveInt,
    expires_at: timestamp,
    threshold: positiveInt,
    keys: z
      .array(RootKeySchema)
      .min(1)
      .max(64)
      .superRefine(uniqueBy((k) => k.keyid, 'keyid')),
  })
  .refine((r) => r.threshold <= r.keys.length, {
    message: 'threshold is larger than the number of keys',
    path: ['threshold'],
  });

/** The envelope as it travels (SPEC §2); unknown fields are ignored. */
export const EnvelopeSchema = z.looseObject({
  payloadType: z.string(),
  payload: z.string(),
  signatures: z.array(z.looseObject({ keyid: z.string().optional(), sig: z.string() })).max(64),
});

export type Snapshot = z.output<typeof SnapshotSchema>;
/** A snapshot as an author writes it, before defaults are filled in. */
export type SnapshotInput = z.input<typeof SnapshotSchema>;
export type Model = z.output<typeof ModelSchema>;
export type ModelChunks = NonNullable<Model['chunks']>;
export type ContainerSpec = z.output<typeof ContainerSchema>;
export type PortMapping = z.output<typeof PortSchema>;
export type RestartPolicy = (typeof RESTART_POLICIES)[number];
export type Job = z.output<typeof JobSchema>;
export type ValidationRule = z.output<typeof ValidationRuleSchema>;
export type ValidationOp = (typeof VALIDATION_OPS)[number];
export type Subcloud = z.output<typeof SubcloudSchema>;
export type Participation = z.output<typeof ParticipationSchema>;
export type Ttl = z.output<typeof TtlSchema>;
export type UpdateTarget = z.output<typeof UpdateTargetSchema>;
export type Root = z.output<typeof RootSchema>;
export type RootKey = z.output<typeof RootKeySchema>;
export type Envelope = z.output<typeof EnvelopeSchema>;

/** Renders zod issues as one line: "models.0.sha256: must be 64 lowercase hex digits; ...". */
export function describeIssues(error: z.ZodError, limit = 5): string {
  const shown = error.issues.slice(0, limit).map((issue) => {
    const where = issue.path.length > 0 ? issue.path.join('.') : '(top)';
    return `${where}: ${issue.message}`;
  });
  const more = error.issues.length > limit ? ` (and ${error.issues.length - limit} more)` : '';
  return shown.join('; ') + more;
}
