import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { CONFIG_DIGEST_PATTERN } from './environment.js';
import { ProtocolError } from './errors.js';
import { RUNTIME_ID_PATTERN, encodeMessage, parseAgentMessage, parseBridgeMessage, parseRuntimeMessage } from './messages.js';

// Fuzzing of the bridge message parsers. FUZZ_RUNS=100000 is the long run
// (`pnpm fuzz`), FUZZ_SEED reproduces one; the suite runs 1,000. Frames are random text and
// bytes, random JSON, and valid messages with one field replaced, so that both refusals and
// acceptances are reached.

const RUNS = Number.isInteger(Number(process.env.FUZZ_RUNS)) && Number(process.env.FUZZ_RUNS) > 0 ? Number(process.env.FUZZ_RUNS) : 1000;
const SEED = Number.isInteger(Number(process.env.FUZZ_SEED)) ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

const digest = fc.stringMatching(/^[0-9a-f]{64}$/).map((h) => `sha256:${h}`);
const valid = fc.oneof(
  fc.record({ type: fc.constant('hello'), runtimeId: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,20}$/), digest: fc.option(digest, { nil: null }) }),
  fc.record({ type: fc.constant('welcome'), digest: fc.option(digest, { nil: null }), pingIntervalMs: fc.integer({ min: 1, max: 3_600_000 }) }),
  fc.record({
    type: fc.constant('environment'),
    nonce: fc.string({ minLength: 1, maxLength: 20 }),
    digest,
    environment: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })),
  }),
  fc.record({ type: fc.constant('ack'), nonce: fc.string({ minLength: 1, maxLength: 20 }), digest }),
  fc.record({
    type: fc.constant('nack'),
    nonce: fc.string({ minLength: 1, maxLength: 20 }),
    digest,
    code: fc.stringMatching(/^[A-Z][A-Z0-9_]{0,10}$/),
    message: fc.string(),
  }),
  fc.record({ type: fc.constantFrom('ping', 'pong'), id: fc.nat() }),
  fc.record({ type: fc.constant('error'), code: fc.stringMatching(/^[A-Z][A-Z0-9_]{0,10}$/), message: fc.string() }),
);

/** A valid message with at most one field replaced by any JSON value, or removed. */
const mutated = fc
  .tuple(valid, fc.option(fc.tuple(fc.nat(), fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined })), { freq: 2, nil: undefined }))
  .map(([message, change]) => {
    if (change === undefined) return JSON.stringify(message);
    const copy: Record<string, unknown> = { ...message };
    const keys = Object.keys(copy);
    const key = keys[change[0] % keys.length] as string;
    if (change[1] === undefined) delete copy[key];
    else copy[key] = change[1];
    return JSON.stringify(copy);
  });

const frame = fc.oneof(
  { weight: 4, arbitrary: mutated },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? '') },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: mutated.map((t) => Buffer.from(t.slice(0, t.length >> 1))) },
);

const PARSERS = [
  { parse: parseBridgeMessage, types: ['hello', 'welcome', 'environment', 'ack', 'nack', 'ping', 'pong', 'error'] },
  { parse: parseRuntimeMessage, types: ['hello', 'ack', 'nack', 'ping', 'pong'] },
  { parse: parseAgentMessage, types: ['welcome', 'environment', 'ping', 'pong', 'error'] },
] as const;

/** What every accepted message must be, judged by hand from the protocol's rules rather than its schema. */
function judge(message: Record<string, unknown>, types: readonly string[]): void {
  expect(types).toContain(message.type);
  const isDigest = (v: unknown) => typeof v === 'string' && CONFIG_DIGEST_PATTERN.test(v);
  switch (message.type) {
    case 'hello':
      expect(typeof message.runtimeId === 'string' && RUNTIME_ID_PATTERN.test(message.runtimeId)).toBe(true);
      expect(message.digest === null || isDigest(message.digest)).toBe(true);
      break;
    case 'environment':
    case 'ack':
    case 'nack':
      expect(typeof message.nonce === 'string' && message.nonce.length >= 1 && message.nonce.length <= 128).toBe(true);
      expect(isDigest(message.digest)).toBe(true);
      if (message.type === 'environment')
        expect(typeof message.environment === 'object' && message.environment !== null && !Array.isArray(message.environment)).toBe(true);
      break;
    case 'ping':
    case 'pong':
      expect(Number.isSafeInteger(message.id) && (message.id as number) >= 0).toBe(true);
      break;
  }
}

describe('bridge message parsers under fuzzing', () => {
  it('throw nothing but ProtocolError, accept only well-formed messages of their direction, and re-read what they encode', () => {
    const accepted = [0, 0, 0];
    fc.assert(
      fc.property(frame, (raw) => {
        PARSERS.forEach(({ parse, types }, i) => {
          let message: Record<string, unknown>;
          try {
            message = parse(raw) as Record<string, unknown>;
          } catch (error) {
            if (!(error instanceof ProtocolError)) throw new Error(`parser crashed with ${String(error)}`, { cause: error });
            expect(['MALFORMED', 'INVALID_MESSAGE']).toContain(error.code);
            return;
          }
          accepted[i] = (accepted[i] ?? 0) + 1;
          judge(message, types);
          expect(parse(encodeMessage(message as never))).toEqual(message);
        });
      }),
      { numRuns: RUNS, seed: SEED },
    );
    console.log(`bridge fuzz: seed ${SEED}, ${RUNS} frames, accepted bridge/runtime/agent ${accepted.join('/')}, 0 crashes, 0 false accepts`);
    for (const n of accepted) expect(n).toBeGreaterThan(RUNS / 50);
  });
});
