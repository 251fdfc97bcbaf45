import { dirname, isAbsolute, resolve } from 'node:path';

import { DEFAULT_MAX_ENVELOPE_BYTES, NAME_PATTERN } from '@resultity/snapshot';
import { readFileBounded } from '@resultity/snapshot/origin';
import { z } from 'zod';

import { AgentError } from './errors.js';

const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const path = z.string().min(1, 'must be a non-empty path');
const listenAddress = z
  .string()
  .refine((s) => parseListen(s) !== null, 'must be host:port on a loopback address (127.0.0.1, ::1, localhost) or an absolute unix socket path');

const TimersSchema = z
  .strictObject({
    poll_interval_s: z.number().int().min(1).default(60),
    heartbeat_interval_s: z.number().int().min(1).default(30),
    retry_initial_ms: z.number().int().min(1).default(1000),
    retry_max_ms: z.number().int().min(1).default(300_000),
    jitter: z.number().min(0).max(1).default(0.1),
  })
  .refine((t) => t.retry_max_ms >= t.retry_initial_ms, { message: 'must not be below retry_initial_ms', path: ['retry_max_ms'] });

/** The Agent's configuration file as validated; unknown keys are refused so a typo is never silently ignored. */
export const ConfigSchema = z.strictObject({
  network: z.string().regex(NAME_PATTERN, 'must match ^[a-z0-9][a-z0-9._-]{0,62}$'),
  origin: z
    .string()
    .refine((s) => URL.canParse(s) && ['http:', 'https:'].includes(new URL(s).protocol), 'must be an http(s) URL'),
  node_id: z.string().regex(NODE_ID, 'must be 1-128 characters of A-Z a-z 0-9 . _ : -'),
  trust_root: z.array(path).min(1, 'must list at least one root envelope file, oldest first'),
  state_dir: path,
  allowed_registries: z.array(z.string().min(1)).default([]),
  profile: z
    .strictObject({
      vram_gb: z.number().min(0).default(0),
      regions: z.array(z.string()).default([]),
      gpu: z.array(z.string()).default([]),
    })
    .default({ vram_gb: 0, regions: [], gpu: [] }),
  bridge: z
    .strictObject({
      enabled: z.boolean().default(true),
      listen: listenAddress.default('127.0.0.1:7420'),
      token_file: path.optional(),
      ack_timeout_ms: z.number().int().min(1).default(10_000),
    })
    .default({ enabled: true, listen: '127.0.0.1:7420', ack_timeout_ms: 10_000 }),
  docker: z
    .strictObject({ socket_path: path.default('/var/run/docker.sock') })
    .default({ socket_path: '/var/run/docker.sock' }),
  limits: z
    .strictObject({
      max_snapshot_bytes: z.number().int().min(1024).default(DEFAULT_MAX_ENVELOPE_BYTES),
      request_timeout_ms: z.number().int().min(1).default(30_000),
    })
    .default({ max_snapshot_bytes: DEFAULT_MAX_ENVELOPE_BYTES, request_timeout_ms: 30_000 }),
  // Model downloads: mirrors come from signed snapshots but are still outside hosts; these bound what one can do.
  downloads: z
    .strictObject({
      // Loopback and private mirrors are for development and tests; a production node never fetches from its own networks.
      allow_private_addresses: z.boolean().default(false),
      // A mirror slower than this on average over a whole window is abandoned for the next one.
      min_bytes_per_second: z.number().int().min(0).default(64 * 1024),
      rate_window_ms: z.number().int().min(1).default(30_000),
      // Ranged requests in flight for one chunked model, spread over its mirrors.
      connections: z.number().int().min(1).max(64).default(8),
      // Bytes of the models disk never used for downloads: an apply that would eat into them is refused up front.
      reserve_bytes: z.number().int().min(0).default(0),
      // Bandwidth for model downloads, shared by every connection (0: unlimited), so a node can keep serving jobs while it fetches.
      max_bytes_per_second: z.number().int().min(0).default(0),
    })
    .default({ allow_private_addresses: false, min_bytes_per_second: 64 * 1024, rate_window_ms: 30_000, connections: 8, reserve_bytes: 0, max_bytes_per_second: 0 }),
  retry_budget: z.number().int().min(1).default(5),
  history_size: z.number().int().min(1).max(1000).default(10),
  timers: TimersSchema.default({ poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 300_000, jitter: 0.1 }),
  status: z
    .strictObject({ listen: listenAddress.nullable().default('127.0.0.1:9464') })
    .default({ listen: '127.0.0.1:9464' }),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** A configuration as written, before defaults (what tests and the dev network write). */
export type ConfigInput = z.input<typeof ConfigSchema>;

/** A validated configuration with every path made absolute. */
export type AgentConfig = z.output<typeof ConfigSchema> & {
  /** The file it was read from, or null when built in memory. */
  readonly file: string | null;
  readonly bridge: z.output<typeof ConfigSchema>['bridge'] & { token_file: string };
};

/** A loopback TCP address or a unix socket path. */
export type ListenAddress = { host: '127.0.0.1' | '::1' | 'localhost'; port: number } | { socketPath: string };

export function parseListen(value: string): ListenAddress | null {
  if (value.startsWith('/')) return { socketPath: value };
  const match = /^(127\.0\.0\.1|localhost|\[::1\]|::1):(\d{1,5})$/.exec(value);
  if (!match) return null;
  const port = Number(match[2]);
  if (port > 65535) return null;
  const host = match[1] === '[::1]' ? '::1' : (match[1] as '127.0.0.1' | '::1' | 'localhost');
  return { host, port };
}

/** Renders zod issues naming the field: "limits.request_timeout_ms: Too small ...". */
function describe(error: z.ZodError): string {
  return error.issues
    .slice(0, 8)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(top)'}: ${issue.message}`)
    .join('; ');
}

/** Validates a parsed configuration; paths are resolved against `baseDir`. */
export function parseConfig(value: unknown, baseDir: string, file: string | null = null): AgentConfig {
  const parsed = ConfigSchema.safeParse(value);
  if (!parsed.success) {
    throw new AgentError('CONFIG_INVALID', `${file ?? 'configuration'}: ${describe(parsed.error)}`);
  }
  const config = parsed.data;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  const stateDir = abs(config.state_dir);
  const listen = config.bridge.listen.startsWith('/') ? config.bridge.listen : config.bridge.listen;
  return {
    ...config,
    file,
    trust_root: config.trust_root.map(abs),
    state_dir: stateDir,
    docker: { socket_path: abs(config.docker.socket_path) },
    bridge: {
      ...config.bridge,
      listen,
      token_file: config.bridge.token_file === undefined ? resolve(stateDir, 'bridge.token') : abs(config.bridge.token_file),
    },
  };
}

/** A configuration is a few hundred bytes; this only keeps a wrong path from being read whole. */
const CONFIG_FILE_LIMIT = 1024 * 1024;

/** Reads and validates a configuration file; every failure is CONFIG_INVALID naming the file and field. */
export async function loadConfig(file: string): Promise<AgentConfig> {
  const absolute = resolve(file);
  let text: string;
  try {
    text = new TextDecoder().decode(await readFileBounded(absolute, CONFIG_FILE_LIMIT));
  } catch (cause) {
    throw new AgentError('CONFIG_INVALID', `configuration: ${(cause as Error).message}`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new AgentError('CONFIG_INVALID', `${absolute} is not JSON: ${(cause as Error).message}`, { cause });
  }
  return parseConfig(value, dirname(absolute), absolute);
}
