import { decodeUtf8 } from './bytes.js';
import { refuse } from './errors.js';
import { type Envelope, EnvelopeSchema, describeIssues } from './schema.js';

/** SPEC §5: the default bound on what a verifier reads for one envelope. */
export const DEFAULT_MAX_ENVELOPE_BYTES = 4 * 1024 * 1024;

/**
 * Parses envelope bytes, refusing oversize input before JSON.parse ever sees it, so a hostile
 * origin cannot make the Agent parse (or hold) more than its limit.
 */
export function parseEnvelope(bytes: Uint8Array, maxBytes = DEFAULT_MAX_ENVELOPE_BYTES): Envelope {
  if (bytes.byteLength > maxBytes) {
    refuse('TOO_LARGE', `envelope is ${bytes.byteLength} bytes, the limit is ${maxBytes}`);
  }
  const text = decodeUtf8(bytes, 'envelope');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    refuse('MALFORMED', `envelope is not JSON: ${(cause as Error).message}`, cause);
  }
  const parsed = EnvelopeSchema.safeParse(json);
  if (!parsed.success) refuse('MALFORMED', `envelope is not a DSSE envelope: ${describeIssues(parsed.error)}`);
  return parsed.data;
}
