import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { ProtocolError } from './errors.js';
import { encodeEnvironmentFrame, encodeMessage, parseAgentMessage, parseBridgeMessage, parseRuntimeMessage } from './messages.js';

const DIGEST = `sha256:${'b'.repeat(64)}`;

function refusal(parse: () => unknown): ProtocolError {
  try {
    parse();
  } catch (error) {
    if (error instanceof ProtocolError) return error;
    throw error;
  }
  throw new Error('the frame was accepted');
}

describe('parseBridgeMessage', () => {
  it('reads back every message it encodes', () => {
    const messages = [
      { type: 'hello', runtimeId: 'runtime-1', digest: null },
      { type: 'welcome', digest: DIGEST, pingIntervalMs: 1000 },
      { type: 'environment', nonce: 'n1', digest: DIGEST, environment: { digest: DIGEST } },
      { type: 'ack', nonce: 'n1', digest: DIGEST },
      { type: 'nack', nonce: 'n1', digest: DIGEST, code: 'LISTENER_FAILED', message: 'boom' },
      { type: 'ping', id: 1 },
      { type: 'pong', id: 1 },
      { type: 'error', code: 'MALFORMED', message: 'not JSON' },
    ] as const;
    for (const message of messages) expect(parseBridgeMessage(encodeMessage(message))).toEqual(message);
  });

  it('refuses a frame that is not JSON with MALFORMED', () => {
    expect(refusal(() => parseBridgeMessage('{nope')).code).toBe('MALFORMED');
    expect(refusal(() => parseBridgeMessage(Buffer.from([0xff, 0xfe]))).code).toBe('MALFORMED');
  });

  it('refuses an unknown type or a bad field with INVALID_MESSAGE', () => {
    expect(refusal(() => parseBridgeMessage('{"type":"shutdown"}')).code).toBe('INVALID_MESSAGE');
    expect(refusal(() => parseBridgeMessage('{"type":"hello","runtimeId":"","digest":null}')).code).toBe('INVALID_MESSAGE');
    expect(refusal(() => parseBridgeMessage('{"type":"ack","nonce":"n","digest":"sha256:short"}')).code).toBe('INVALID_MESSAGE');
  });
});

describe('encodeEnvironmentFrame', () => {
  it('builds the same message encodeMessage would', () => {
    const environment = { digest: DIGEST, sequence: 1, note: 'quote " and \\ backslash' };
    const frame = encodeEnvironmentFrame('n"1', DIGEST, JSON.stringify(environment));
    expect(JSON.parse(frame)).toEqual({ type: 'environment', nonce: 'n"1', digest: DIGEST, environment });
  });
});

describe('direction-specific parsers', () => {
  it('refuse a message the other side would send', () => {
    expect(refusal(() => parseRuntimeMessage(JSON.stringify({ type: 'welcome', digest: null, pingIntervalMs: 5 }))).code).toBe('INVALID_MESSAGE');
    expect(refusal(() => parseAgentMessage(JSON.stringify({ type: 'hello', runtimeId: 'r', digest: null }))).code).toBe('INVALID_MESSAGE');
  });
});

describe('parsing arbitrary input', () => {
  it('either returns a message or throws a ProtocolError, never anything else', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ type: 'hello', ...(typeof v === 'object' && v !== null ? v : { v }) })),
        ),
        (raw) => {
          for (const parse of [parseBridgeMessage, parseRuntimeMessage, parseAgentMessage]) {
            try {
              parse(raw);
            } catch (error) {
              expect(error).toBeInstanceOf(ProtocolError);
            }
          }
        },
      ),
    );
  });
});
