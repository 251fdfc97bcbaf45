import { basename, dirname, isAbsolute, relative, resolve } from 'node:path';

import { type ListenAddress, parseListen, readFileBounded } from '@resultity/node-kit';
import { DEFAULT_MAX_ENVELOPE_BYTES, NAME_PATTERN } from '@resultity/snapshot';
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
  origin: z.string().refine((s) => URL.canParse(s) && ['http:', 'https:'].includes(new URL(s).protocol), 'must be an http(s) URL'),
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
      /** Default `<state_dir>/run/bridge.sock`; "127.0.0.1:7420" for a TCP loopback bridge. */
      listen: listenAddress.optional(),
      /** Default `<state_dir>/run/bridge.token`, beside the socket: runtimes get that directory mounted. */
      token_file: path.optional(),
      ack_timeout_ms: z.number().int().min(1).default(10_000),
    })
    .default({ enabled: true, ack_timeout_ms: 10_000 }),
  /** The operator's credential for the control routes; never the runtime's bridge token. */
  control: z.strictObject({ token_file: path.optional() }).default({}),
  // What the node gives the snapshot's containers (SPEC §6): process and memory limits, and the GPUs it offers.
  containers: z
    .strictObject({
      pids_limit: z.number().int().min(1).default(4096),
      memory_mb: z.number().int().min(6).optional(),
      gpus: z.number().int().min(0).default(0),
      // Containers declaring ports may run on the host network (a bridge-less engine publishes nothing).
      allow_host_network: z.boolean().default(false),
      // An Agent in a container apart from the engine must see its data directory at the host's path: 'auto' checks it.
      check_shared_paths: z.enum(['auto', 'never']).default('auto'),
      // The labels and names that mark this Agent's containers. An Agent treats every container
      // under its label prefix as its own (and removes those its snapshot does not name), so two
      // Agents on one engine need different prefixes.
      label_prefix: z
        .string()
        .regex(/^[a-z0-9]+(?:[.-][a-z0-9]+)*$/, 'must be lowercase dot-separated words, like io.resultity')
        .default('io.resultity'),
      name_prefix: z
        .string()
        .regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,39}$/, 'must be 1-40 characters of a-z A-Z 0-9 _ . - starting with a letter or digit')
        .default('resultity'),
    })
    .default({ pids_limit: 4096, gpus: 0, allow_host_network: false, check_shared_paths: 'auto', label_prefix: 'io.resultity', name_prefix: 'resultity' }),
  docker: z.strictObject({ socket_path: path.default('/var/run/docker.sock') }).default({ socket_path: '/var/run/docker.sock' }),
  // Following `updates.agent` only happens in a container (the Agent image); a candidate gets this long to pass standby.
  self_update: z
    .strictObject({
      enabled: z.boolean().default(true),
      standby_timeout_ms: z.number().int().min(1000).default(120_000),
      handover_timeout_ms: z.number().int().min(1000).default(60_000),
    })
    .default({ enabled: true, standby_timeout_ms: 120_000, handover_timeout_ms: 60_000 }),
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
      min_bytes_per_second: z
        .number()
        .int()
        .min(0)
        .default(64 * 1024),
      rate_window_ms: z.number().int().min(1).default(30_000),
      // Ranged requests in flight for one chunked model, spread over its mirrors.
      connections: z.number().int().min(1).max(64).default(8),
      // Bytes of the models disk never used for downloads: an apply that would eat into them is refused up front.
      reserve_bytes: z.number().int().min(0).default(0),
      // Bandwidth for model downloads, shared by every connection (0: unlimited), so a node can keep serving jobs while it fetches.
      max_bytes_per_second: z.number().int().min(0).default(0),
    })
    .default({
      allow_private_addresses: false,
      min_bytes_per_second: 64 * 1024,
      rate_window_ms: 30_000,
      connections: 8,
      reserve_bytes: 0,
      max_bytes_per_second: 0,
    }),
  retry_budget: z.number().int().min(1).default(5),
  history_size: z.number().int().min(1).max(1000).default(10),
  // SPEC §5 long-poll: used against an origin that marks its answers, detected per origin; plain polling otherwise.
  long_poll: z
    .strictObject({
      enabled: z.boolean().default(true),
      // How long the origin may hold a request (SPEC §5 allows 1 to 60); the request timeout counts only after it.
      wait_s: z.number().int().min(1).max(60).default(30),
      // After a change, the snapshot fetch waits a random 0..spread_ms so a fleet does not arrive in the same millisecond.
      // 100 ms turns a fleet's burst into a rate (bench/fleet/RESULTS.md) and keeps a node's apply within a quarter second.
      spread_ms: z.number().int().min(0).max(60_000).default(100),
      // How often an origin found not to long-poll (or full) is asked again.
      recheck_s: z.number().int().min(1).max(86_400).default(600),
    })
    .default({ enabled: true, wait_s: 30, spread_ms: 100, recheck_s: 600 }),
  timers: TimersSchema.default({ poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 300_000, jitter: 0.1 }),
  status: z.strictObject({ listen: listenAddress.nullable().default('127.0.0.1:9464') }).default({ listen: '127.0.0.1:9464' }),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** A configuration as written, before defaults (what tests and the dev network write). */
export type ConfigInput = z.input<typeof ConfigSchema>;

/** A validated configuration with every path made absolute. */
export type AgentConfig = z.output<typeof ConfigSchema> & {
  /** The file it was read from, or null when built in memory. */
  readonly file: string | null;
  readonly bridge: z.output<typeof ConfigSchema>['bridge'] & { listen: string; token_file: string };
  readonly control: { token_file: string };
};

/**
 * Where the bridge lives by default, relative to the state directory: one directory holding
 * the socket and its token, mounted read-only at /run/resultity/ into runtime containers (a
 * directory rather than the socket itself, so a restarted Agent's new socket is seen there).
 */
export const BRIDGE_RUN_DIR = 'run';
export const BRIDGE_SOCKET_NAME = 'bridge.sock';
export const BRIDGE_TOKEN_NAME = 'bridge.token';
/** The operator's token, in the state directory and outside the directory runtimes see. */
export const OPERATOR_TOKEN_NAME = 'operator.token';

// Moved to @resultity/node-kit; re-exported so the Agent's modules keep importing them from here.
export { type ListenAddress, parseListen };

/**
 * The host directory runtime containers get at /run/resultity/ (SPEC §6): the one holding the
 * bridge's unix socket as bridge.sock and its token as bridge.token, the names a container is
 * told. Null when the bridge is off, on TCP, or named otherwise: no mount could show it to a
 * container, so a snapshot container with `bridge: true` is refused (POLICY_DENIED) at plan
 * time instead of being started with a directory that holds no bridge.
 */
export function bridgeMountDir(config: Pick<AgentConfig, 'bridge'>): string | null {
  if (!config.bridge.enabled) return null;
  const listen = parseListen(config.bridge.listen);
  if (listen === null || !('socketPath' in listen)) return null;
  const dir = dirname(listen.socketPath);
  const socketNamed = basename(listen.socketPath) === BRIDGE_SOCKET_NAME;
  const tokenBeside = dirname(config.bridge.token_file) === dir && basename(config.bridge.token_file) === BRIDGE_TOKEN_NAME;
  return socketNamed && tokenBeside ? dir : null;
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
  const runDir = resolve(stateDir, BRIDGE_RUN_DIR);
  const bridgeToken = config.bridge.token_file === undefined ? resolve(runDir, BRIDGE_TOKEN_NAME) : abs(config.bridge.token_file);
  const operatorToken = config.control.token_file === undefined ? resolve(stateDir, OPERATOR_TOKEN_NAME) : abs(config.control.token_file);
  const listen = config.bridge.listen ?? resolve(runDir, BRIDGE_SOCKET_NAME);
  // A runtime can read the bridge token's directory, and everything under the socket's
  // directory (that is what is mounted into its container): the operator's token is in neither.
  const insideSocketDir = listen.startsWith('/') && !relative(dirname(listen), operatorToken).startsWith('..');
  if (dirname(operatorToken) === dirname(bridgeToken) || insideSocketDir) {
    throw new AgentError(
      'CONFIG_INVALID',
      `${file ?? 'configuration'}: control.token_file: expected a file outside the bridge's directory ${dirname(bridgeToken)}, found ${operatorToken}`,
    );
  }
  return {
    ...config,
    file,
    trust_root: config.trust_root.map(abs),
    state_dir: stateDir,
    docker: { ...config.docker, socket_path: abs(config.docker.socket_path) },
    bridge: { ...config.bridge, listen, token_file: bridgeToken },
    control: { token_file: operatorToken },
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
