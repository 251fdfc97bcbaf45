import { sampleSnapshot } from '@resultity/testkit';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { codeOf } from './code-of.test-support.js';
import { type SnapshotInput, SnapshotSchema, isModelListValid } from './schema.js';
import { parseSnapshotValue } from './verify.js';

const HEX = 'ab'.repeat(32);
type Container = SnapshotInput['runtime']['containers'][number];
type Model = SnapshotInput['models'][number];

function withModel(extra: Record<string, unknown>) {
  const base = sampleSnapshot();
  return { ...base, models: base.models.map((m: Model) => ({ ...m, ...extra })) };
}

function withContainer(extra: Record<string, unknown>) {
  const base = sampleSnapshot();
  return { ...base, runtime: { containers: base.runtime.containers.map((c: Container) => ({ ...c, ...extra })) } };
}

function withTtl(extra: Record<string, unknown>) {
  const base = sampleSnapshot();
  return { ...base, ttl: { ...base.ttl, ...extra } };
}

/** The distinct dotted paths of the issues, or [] when the value passes. */
function issuesOf(value: unknown): string[] {
  const parsed = SnapshotSchema.safeParse(value);
  return parsed.success ? [] : [...new Set(parsed.error.issues.map((issue) => issue.path.join('.')))];
}

describe('SnapshotSchema', () => {
  describe('models[].chunks', () => {
    it('is optional', () => {
      expect(issuesOf(sampleSnapshot())).toEqual([]);
    });

    it.each([2 ** 20, 2 ** 26, 2 ** 30])('accepts a chunk size of %i bytes', (size) => {
      expect(issuesOf(withModel({ chunks: { size, sha256: HEX } }))).toEqual([]);
    });

    it.each([
      ['below 1 MiB', 2 ** 19],
      ['above 1 GiB', 2 ** 31],
      ['not a power of two', 3 * 2 ** 20],
      ['not an integer', 2 ** 20 + 0.5],
    ])('refuses a chunk size %s', (_, size) => {
      expect(issuesOf(withModel({ chunks: { size, sha256: HEX } }))).toContain('models.0.chunks.size');
    });

    it.each([
      ['uppercase hex', 'AB'.repeat(32)],
      ['63 digits', 'a'.repeat(63)],
      ['a sha256: prefix', `sha256:${HEX}`],
    ])('refuses a chunk list digest in %s', (_, sha256) => {
      expect(issuesOf(withModel({ chunks: { size: 2 ** 20, sha256 } }))).toEqual(['models.0.chunks.sha256']);
    });

    it('refuses chunks without a digest', () => {
      expect(issuesOf(withModel({ chunks: { size: 2 ** 20 } }))).toEqual(['models.0.chunks.sha256']);
    });
  });

  describe('runtime container fields', () => {
    it('defaults bridge and models to false and leaves gpus and shm_size_mb out', () => {
      const container = SnapshotSchema.parse(sampleSnapshot()).runtime.containers[0];
      expect(container).toMatchObject({ bridge: false, models: false });
      expect(container).not.toHaveProperty('gpus');
      expect(container).not.toHaveProperty('shm_size_mb');
    });

    it('keeps what the snapshot asks for', () => {
      const parsed = SnapshotSchema.parse(withContainer({ bridge: true, models: true, gpus: 'all', shm_size_mb: 8192 }));
      expect(parsed.runtime.containers[0]).toMatchObject({ bridge: true, models: true, gpus: 'all', shm_size_mb: 8192 });
      expect(SnapshotSchema.parse(withContainer({ gpus: 2 })).runtime.containers[0]?.gpus).toBe(2);
    });

    it.each([
      ['bridge', 'yes'],
      ['models', 1],
      ['gpus', 0],
      ['gpus', -1],
      ['gpus', 1.5],
      ['gpus', 'any'],
      ['shm_size_mb', 0],
      ['shm_size_mb', 64.5],
      ['shm_size_mb', '64'],
    ])('refuses %s: %j', (field, value) => {
      expect(issuesOf(withContainer({ [field]: value }))).toEqual([`runtime.containers.0.${field}`]);
    });
  });

  describe('ttl bounds', () => {
    it.each(['poll_interval_s', 'heartbeat_interval_s', 'cache_ttl_s'])('holds %s to 1..86400', (field) => {
      expect(issuesOf(withTtl({ [field]: 1 }))).toEqual([]);
      expect(issuesOf(withTtl({ [field]: 86_400 }))).toEqual([]);
      expect(issuesOf(withTtl({ [field]: 0 }))).toEqual([`ttl.${field}`]);
      expect(issuesOf(withTtl({ [field]: 86_401 }))).toEqual([`ttl.${field}`]);
    });

    it('holds retry_initial_ms and retry_max_ms to 1..86400000', () => {
      expect(issuesOf(withTtl({ retry_initial_ms: 1, retry_max_ms: 86_400_000 }))).toEqual([]);
      expect(issuesOf(withTtl({ retry_initial_ms: 0 }))).toEqual(['ttl.retry_initial_ms']);
      expect(issuesOf(withTtl({ retry_initial_ms: 1000, retry_max_ms: 86_400_001 }))).toEqual(['ttl.retry_max_ms']);
    });
  });

  describe('timestamps', () => {
    it.each([
      ['February 30', '2026-02-30T12:00:00Z'],
      ['February 29 of a common year', '2027-02-29T12:00:00Z'],
      ['hour 24', '2026-11-25T24:00:00Z'],
    ])('refuses %s in issued_at', (_, issued_at) => {
      expect(issuesOf({ ...sampleSnapshot(), issued_at })).toContain('issued_at');
    });

    it('accepts February 29 of a leap year', () => {
      expect(issuesOf({ ...sampleSnapshot(), issued_at: '2028-02-29T12:00:00Z' })).toEqual([]);
    });
  });
});

describe('isModelListValid, the hand-written twin of the models schema', () => {
  const ModelListSchema = SnapshotSchema.shape.models;
  const hex = fc.constantFrom(HEX, 'AB'.repeat(32), 'ab'.repeat(31), `${HEX}0`, '');
  const field = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>) => fc.oneof({ weight: 4, arbitrary: good }, { weight: 1, arbitrary: bad });
  const junk = fc.oneof(fc.constant(null), fc.constant(undefined), fc.boolean(), fc.constant([]), fc.constant({}), fc.double(), fc.string({ maxLength: 3 }));
  const model = fc.record(
    {
      name: field(fc.constantFrom('a', 'llama-3.1', 'x'.repeat(63), 'm0', 'm1'), fc.constantFrom('', 'A', '-a', 'x'.repeat(64), 'a b')),
      version: field(fc.string({ minLength: 1, maxLength: 5 }), fc.oneof(fc.constantFrom('', 'v'.repeat(129)), junk)),
      sha256: field(fc.constant(HEX), fc.oneof(hex, junk)),
      size: field(fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER), fc.oneof(fc.constantFrom(-1, 1.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, -0), junk)),
      urls: field(
        fc.array(fc.constantFrom('http://a', 'https://cdn.example/m.gguf', 'https://h/p?q#f'), { minLength: 1, maxLength: 3 }),
        fc.oneof(
          fc.constant([]),
          fc.constant(Array(17).fill('http://a')),
          fc.array(fc.constantFrom('ftp://a', 'http://', 'http://a b', `http://${'a'.repeat(4090)}`, `http://a/${'a'.repeat(4090)}`), {
            minLength: 1,
            maxLength: 2,
          }),
          junk,
        ),
      ),
      chunks: field(
        fc.record({ size: fc.constantFrom(2 ** 20, 2 ** 30), sha256: fc.constant(HEX) }),
        fc.oneof(fc.record({ size: fc.constantFrom(2 ** 19, 2 ** 31, 3 * 2 ** 20, 2 ** 20 + 0.5), sha256: hex }), junk),
      ),
      extra: fc.jsonValue({ maxDepth: 1 }),
    },
    { requiredKeys: [] },
  );
  const list = fc.oneof({ weight: 5, arbitrary: fc.array(model, { maxLength: 4 }) }, { weight: 1, arbitrary: junk });

  it('accepts exactly the lists the schema accepts', () => {
    fc.assert(
      fc.property(list, (models) => {
        expect(isModelListValid(models)).toBe(ModelListSchema.safeParse(models).success);
      }),
      { numRuns: 5000 },
    );
  });

  it('gives the same snapshot through parseSnapshotValue as the full schema', () => {
    const value = JSON.parse(JSON.stringify(withModel({ chunks: { size: 2 ** 20, sha256: HEX }, extra: [1] })));
    expect(isModelListValid(value.models)).toBe(true);
    expect(parseSnapshotValue(value)).toEqual(SnapshotSchema.parse(value));
  });

  it('leaves a snapshot with bad models to the full schema, which names the field', () => {
    expect(codeOf(() => parseSnapshotValue(withModel({ size: -1 })))).toBe('SCHEMA_INVALID');
    expect(() => parseSnapshotValue(withModel({ size: -1 }))).toThrow(/models\.0\.size/);
  });

  it('still checks everything but the models when the models pass', () => {
    expect(() => parseSnapshotValue(withTtl({ cache_ttl_s: 0 }))).toThrow(/ttl\.cache_ttl_s/);
  });
});
