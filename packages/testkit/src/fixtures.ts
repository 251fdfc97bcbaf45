import type { SnapshotInput } from '@resultity/snapshot';

const HEX = '0123456789abcdef';

/** A deterministic 64-hex string derived from a seed, for hashes and digests in fixtures. */
export function fakeHex(seed: string | number): string {
  let out = '';
  let x = 0;
  for (const ch of String(seed)) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  for (let i = 0; i < 64; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out += HEX[(x >>> 16) & 15];
  }
  return out;
}

/** A valid schema-1 snapshot; override any section. */
export function sampleSnapshot(overrides: Partial<SnapshotInput> & Record<string, unknown> = {}): SnapshotInput {
  return {
    schema: 1,
    network: 'testnet',
    sequence: 1,
    issued_at: '2026-11-25T12:00:00Z',
    expires_at: '2099-12-02T12:00:00Z',
    models: [
      {
        name: 'llama-3.1-8b-q4',
        version: '1.2.0',
        sha256: fakeHex('llama'),
        size: 1024,
        urls: ['http://127.0.0.1:1/models/llama.gguf'],
      },
    ],
    runtime: {
      containers: [
        {
          name: 'inference',
          image: '127.0.0.1:5000/resultity/runtime',
          tag: '1.4.2',
          digest: `sha256:${fakeHex('runtime')}`,
          env: { LOG_LEVEL: 'info' },
          command: [],
          ports: [],
          restart: 'always',
        },
      ],
    },
    job: {
      max_tokens: 4096,
      max_queue_size: 64,
      execution_timeout_ms: 120000,
      validation: [{ field: 'max_tokens', op: 'lte', value: 4096 }],
    },
    participation: {
      mode: 'testnet',
      subclouds: [{ id: 'eu-gpu', require: { min_vram_gb: 24, regions: ['eu'] } }],
    },
    ttl: {
      poll_interval_s: 60,
      heartbeat_interval_s: 30,
      retry_initial_ms: 1000,
      retry_max_ms: 300000,
      cache_ttl_s: 3600,
    },
    rollout: { percent: 100 },
    ...overrides,
  };
}

/** A snapshot of about `models` models and `containers` containers, for size and speed tests. */
export function largeSnapshot(models: number, containers: number, sequence = 1): SnapshotInput {
  return sampleSnapshot({
    sequence,
    models: Array.from({ length: models }, (_, i) => ({
      name: `model-${i}`,
      version: `1.${i}.0`,
      sha256: fakeHex(`model-${i}`),
      size: 1_000_000 + i,
      urls: [`https://models.example/resultity/model-${i}/1.${i}.0/weights.gguf`, `https://mirror.example/model-${i}.gguf`],
    })),
    runtime: {
      containers: Array.from({ length: containers }, (_, i) => ({
        name: `container-${i}`,
        image: `registry.example/resultity/runtime-${i}`,
        tag: `1.${i}.0`,
        digest: `sha256:${fakeHex(`container-${i}`)}`,
        env: { LOG_LEVEL: 'info', SHARD: String(i), MODEL_DIR: '/models' },
        command: ['serve', '--port', String(8000 + i)],
        ports: [{ container: 8000 + i, host: 18000 + i, protocol: 'tcp' as const }],
        restart: 'always' as const,
      })),
    },
  });
}
