import { describeIssues } from '@resultity/snapshot';
import { z } from 'zod';

import { ConfigDigestSchema, type RuntimeEnvironment } from './environment.js';
import { ProtocolError } from './errors.js';

/**
 * The WebSocket subprotocol both sides must name. A breaking change to any message gets a new
 * name, so an old bridge and a new Agent fail the handshake instead of misreading each other.
 */
export const BRIDGE_SUBPROTOCOL = 'resultity.bridge.v1';

/** Close codes the endpoint and the bridge use, beyond those of RFC 6455. */
export const CLOSE_CODES = {
  /** The endpoint (or the bridge) is shutting down. */
  GOING_AWAY: 1001,
  /** Too many messages per second, or too many malformed ones. */
  POLICY_VIOLATION: 1008,
  /** A frame larger than the endpoint's limit. */
  MESSAGE_TOO_BIG: 1009,
  /** No `hello` arrived in time after the connection opened. */
  HELLO_TIMEOUT: 4000,
  /** The other side stopped answering pings. */
  KEEPALIVE_TIMEOUT: 4001,
  /** Another connection said `hello` with the same runtime id; the older one is closed. */
  REPLACED: 4002,
  /** The endpoint has as many connections as it allows. */
  TOO_MANY_CONNECTIONS: 4003,
} as const;

/** Codes of `error` messages the endpoint sends back for a message it will not act on. */
export const ERROR_MESSAGE_CODES = ['MALFORMED', 'INVALID_MESSAGE', 'HELLO_REQUIRED', 'UNEXPECTED_MESSAGE', 'UNKNOWN_NONCE'] as const;

/**
 * Codes of a `nack`. The first four come from the bridge; ACK_TIMEOUT and DISCONNECTED are
 * made up by the endpoint when no answer came.
 */
export const NACK_CODES = ['ENVIRONMENT_INVALID', 'ENVIRONMENT_REJECTED', 'LISTENER_FAILED', 'APPLY_FAILED', 'ACK_TIMEOUT', 'DISCONNECTED'] as const;
export type NackCode = (typeof NACK_CODES)[number];

/** A runtime id: what the Agent knows a bridge by (logs, acks, replacing a stale connection). */
export const RUNTIME_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const runtimeId = z.string().regex(RUNTIME_ID_PATTERN, 'must be 1-128 of A-Z a-z 0-9 . _ : - starting with a letter or digit');
const nonce = z.string().min(1).max(128);
const code = z.string().regex(/^[A-Z][A-Z0-9_]{0,63}$/, 'must be an upper-case code');
const text = z.string().max(2048);
const pingId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const HelloMessageSchema = z.looseObject({
  type: z.literal('hello'),
  runtimeId,
  // The digest the runtime already runs with, so the Agent sends the environment only if it differs.
  digest: ConfigDigestSchema.nullable(),
});

export const WelcomeMessageSchema = z.looseObject({
  type: z.literal('welcome'),
  digest: ConfigDigestSchema.nullable(),
  pingIntervalMs: z.number().int().min(1).max(3_600_000),
});

export const EnvironmentMessageSchema = z.looseObject({
  type: z.literal('environment'),
  nonce,
  digest: ConfigDigestSchema,
  // Checked apart from the frame (parseRuntimeEnvironment), so that a bad environment can
  // still be answered with a nack that names its nonce.
  environment: z.record(z.string(), z.unknown()),
});

export const AckMessageSchema = z.looseObject({
  type: z.literal('ack'),
  nonce,
  digest: ConfigDigestSchema,
});

export const NackMessageSchema = z.looseObject({
  type: z.literal('nack'),
  nonce,
  digest: ConfigDigestSchema,
  code,
  message: text,
});

export const PingMessageSchema = z.looseObject({ type: z.literal('ping'), id: pingId });
export const PongMessageSchema = z.looseObject({ type: z.literal('pong'), id: pingId });

export const ErrorMessageSchema = z.looseObject({
  type: z.literal('error'),
  code,
  message: text,
});

/** Any message of the protocol, in either direction. */
export const BridgeMessageSchema = z.discriminatedUnion('type', [
  HelloMessageSchema,
  WelcomeMessageSchema,
  EnvironmentMessageSchema,
  AckMessageSchema,
  NackMessageSchema,
  PingMessageSchema,
  PongMessageSchema,
  ErrorMessageSchema,
]);

/** Messages the Agent's endpoint sends. */
export const AgentMessageSchema = z.discriminatedUnion('type', [
  WelcomeMessageSchema,
  EnvironmentMessageSchema,
  PingMessageSchema,
  PongMessageSchema,
  ErrorMessageSchema,
]);

/** Messages the runtime's bridge sends. */
export const RuntimeMessageSchema = z.discriminatedUnion('type', [
  HelloMessageSchema,
  AckMessageSchema,
  NackMessageSchema,
  PingMessageSchema,
  PongMessageSchema,
]);

export type HelloMessage = z.output<typeof HelloMessageSchema>;
export type WelcomeMessage = z.output<typeof WelcomeMessageSchema>;
export type EnvironmentMessage = z.output<typeof EnvironmentMessageSchema>;
export type AckMessage = z.output<typeof AckMessageSchema>;
export type NackMessage = z.output<typeof NackMessageSchema>;
export type PingMessage = z.output<typeof PingMessageSchema>;
export type PongMessage = z.output<typeof PongMessageSchema>;
export type ErrorMessage = z.output<typeof ErrorMessageSchema>;
export type BridgeMessage = z.output<typeof BridgeMessageSchema>;
export type AgentMessage = z.output<typeof AgentMessageSchema>;
export type RuntimeMessage = z.output<typeof RuntimeMessageSchema>;

function decode<T>(schema: z.ZodType<T>, raw: string | Buffer, who: string): T {
  let value: unknown;
  try {
    value = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch (error) {
    throw new ProtocolError('MALFORMED', `expected a JSON text, found ${describeRaw(raw)}`, { cause: error });
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const type = typeof value === 'object' && value !== null && 'type' in value ? JSON.stringify((value as { type: unknown }).type) : 'none';
    throw new ProtocolError('INVALID_MESSAGE', `expected a ${who} message, found type ${type.slice(0, 64)}: ${describeIssues(result.error)}`, {
      cause: result.error,
    });
  }
  return result.data;
}

function describeRaw(raw: string | Buffer): string {
  const length = typeof raw === 'string' ? raw.length : raw.byteLength;
  return `${length} bytes that do not parse`;
}

/** Parses one frame as any protocol message; throws ProtocolError MALFORMED or INVALID_MESSAGE. */
export function parseBridgeMessage(raw: string | Buffer): BridgeMessage {
  return decode(BridgeMessageSchema, raw, 'bridge');
}

/** Parses a frame the endpoint received: only what a bridge may send is accepted. */
export function parseRuntimeMessage(raw: string | Buffer): RuntimeMessage {
  return decode(RuntimeMessageSchema, raw, 'runtime');
}

/** Parses a frame the bridge received: only what an Agent may send is accepted. */
export function parseAgentMessage(raw: string | Buffer): AgentMessage {
  return decode(AgentMessageSchema, raw, 'Agent');
}

/** The form the endpoint sends: the environment is typed on the way out. */
export interface OutgoingEnvironmentMessage {
  type: 'environment';
  nonce: string;
  digest: string;
  environment: RuntimeEnvironment;
}

/** Serializes a message for the wire; the one place frames are built, so both sides agree. */
export function encodeMessage(message: BridgeMessage | OutgoingEnvironmentMessage): string {
  return JSON.stringify(message);
}

/**
 * Builds an `environment` frame around an environment serialized once, so the endpoint does
 * not stringify the same environment again for each of a hundred bridges.
 */
export function encodeEnvironmentFrame(nonce: string, digest: string, environmentJson: string): string {
  return `{"type":"environment","nonce":${JSON.stringify(nonce)},"digest":${JSON.stringify(digest)},"environment":${environmentJson}}`;
}
