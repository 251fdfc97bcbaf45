import { isAbsolute, relative } from 'node:path';

import { fuzzRuns, fuzzSeed } from '@resultity/testkit';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { parseConfig } from './config.js';
import { AgentError } from './errors.js';

// Fuzzing of the Agent's configuration parser. FUZZ_RUNS=100000 is the long run
// (`pnpm fuzz`), FUZZ_SEED reproduces one; the suite runs 1,000. Inputs are valid
// configurations with fields replaced, removed or added (at any depth) and random JSON.

const BASE = {
  network: 'testnet',
  origin: 'http://127.0.0.1:8080',
  node_id: 'node-1',
  trust_root: ['root/1.json'],
  state_dir: 'state',
  allowed_registries: ['127.0.0.1:5000'],
  profile: { vram_gb: 24, regions: ['eu'], gpu: [] },
  bridge: { enabled: true, ack_timeout_ms: 1000 },
  docker: { socket_path: '/var/run/docker.sock' },
  limits: { max_snapshot_bytes: 65536, request_timeout_ms: 1000 },
  timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 10, retry_max_ms: 100, jitter: 0 },
  status: { listen: '127.0.0.1:0' },
};

const replacement = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom('', '/abs/path', 'rel/path', '127.0.0.1:1', '[::1]:7420', '0.0.0.0:80', '/run/x.sock', 'ftp://x', 'http://[::1]:9', -1, 0, 1e300, 0.5),
);

/** Up to three edits, each at a path into the configuration: replace, delete, or add a key. */
const edits = fc.array(
  fc.record({ path: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }), op: fc.constantFrom('set', 'delete', 'add'), value: replacement }),
  { maxLength: 3 },
);

function applyEdits(edits: readonly { path: number[]; op: string; value: unknown }[]): unknown {
  const config = structuredClone(BASE) as Record<string, unknown>;
  for (const edit of edits) {
    let node: Record<string, unknown> = config;
    for (let depth = 0; depth < edit.path.length; depth++) {
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      const key = keys[(edit.path[depth] as number) % keys.length] as string;
      const child = node[key];
      const last = depth === edit.path.length - 1 || child === null || typeof child !== 'object';
      if (last) {
        if (edit.op === 'delete') delete node[key];
        else if (edit.op === 'add') node[`${key}_x`] = edit.value;
        else node[key] = edit.value;
        break;
      }
      node = child as Record<string, unknown>;
    }
  }
  return config;
}

describe('parseConfig under fuzzing', () => {
  it('throws nothing but CONFIG_INVALID and returns only configurations whose paths are absolute and whose operator token is out of the runtime’s reach', () => {
    let accepted = 0;
    const runs = fuzzRuns();
    const seed = fuzzSeed();
    const input = fc.oneof({ weight: 5, arbitrary: edits.map(applyEdits) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) });
    fc.assert(
      fc.property(input, (value) => {
        let config: ReturnType<typeof parseConfig>;
        try {
          config = parseConfig(value, '/etc/resultity');
        } catch (error) {
          if (!(error instanceof AgentError)) throw new Error(`config parser crashed with ${String(error)}`, { cause: error });
          expect(error.code).toBe('CONFIG_INVALID');
          return;
        }
        accepted++;
        expect(/^[a-z0-9][a-z0-9._-]{0,62}$/.test(config.network)).toBe(true);
        expect(['http:', 'https:']).toContain(new URL(config.origin).protocol);
        for (const p of [config.state_dir, config.docker.socket_path, config.bridge.token_file, config.control.token_file, ...config.trust_root]) {
          expect(isAbsolute(p)).toBe(true);
        }
        expect(config.trust_root.length).toBeGreaterThan(0);
        expect(config.timers.retry_max_ms).toBeGreaterThanOrEqual(config.timers.retry_initial_ms);
        expect(relative(config.bridge.token_file, config.control.token_file)).not.toBe('');
        // The operator token is never beside the bridge token nor under the socket's directory.
        expect(config.control.token_file.startsWith(`${config.bridge.token_file.replace(/[^/]*$/, '')}`)).toBe(false);
      }),
      { numRuns: runs, seed },
    );
    console.log(`config fuzz: seed ${seed}, ${runs} inputs, ${accepted} accepted, 0 crashes, 0 false accepts`);
    expect(accepted).toBeGreaterThan(runs / 20);
  });
});
