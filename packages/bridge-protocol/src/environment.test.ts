import { describe, expect, it } from 'vitest';

import { environmentFromSnapshot, parseRuntimeEnvironment } from './environment.js';
import { ProtocolError } from './errors.js';

const HEX = 'c'.repeat(64);

describe('parseRuntimeEnvironment', () => {
  const valid = {
    digest: `sha256:${HEX}`,
    sequence: 3,
    job: { max_tokens: 10, max_queue_size: 2, execution_timeout_ms: 100 },
    models: [{ name: 'tiny', version: '1', sha256: HEX, path: '/m/tiny' }],
    participation: { mode: 'testnet', subclouds: ['eu-gpu'] },
  };

  it('accepts a complete environment', () => {
    expect(parseRuntimeEnvironment(valid)).toEqual(valid);
  });

  it('refuses a broken one with ENVIRONMENT_INVALID naming the field', () => {
    let caught: unknown;
    try {
      parseRuntimeEnvironment({ ...valid, job: { ...valid.job, max_tokens: 0 } });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ProtocolError);
    expect((caught as ProtocolError).code).toBe('ENVIRONMENT_INVALID');
    expect((caught as ProtocolError).message).toContain('job.max_tokens');
  });

  it('refuses two models of one name', () => {
    expect(() => parseRuntimeEnvironment({ ...valid, models: [valid.models[0], valid.models[0]] })).toThrow(/duplicate model name/);
  });
});

describe('environmentFromSnapshot', () => {
  it('takes the job limits and models from the snapshot and the paths and flags from the Agent', () => {
    const snapshot = {
      sequence: 7,
      job: { max_tokens: 64, max_queue_size: 8, execution_timeout_ms: 500, validation: [{ field: 'max_tokens', op: 'lte', value: 64 }] },
      models: [{ name: 'tiny', version: '2', sha256: HEX, size: 1, urls: ['http://127.0.0.1/x'] }],
    } as unknown as Parameters<typeof environmentFromSnapshot>[0];
    const env = environmentFromSnapshot(snapshot, `sha256:${HEX}`, {
      modelPath: (model) => `/state/models/${model.name}`,
      participation: { mode: 'mainnet', subclouds: ['eu-gpu'] },
    });
    expect(env).toEqual({
      digest: `sha256:${HEX}`,
      sequence: 7,
      job: snapshot.job,
      models: [{ name: 'tiny', version: '2', sha256: HEX, path: '/state/models/tiny' }],
      participation: { mode: 'mainnet', subclouds: ['eu-gpu'] },
    });
  });
});
