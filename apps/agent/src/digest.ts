import { AgentError } from './errors.js';

const CONFIG_DIGEST = /^sha256:[0-9a-f]{64}$/;

/** True for a config digest exactly as SPEC §1 writes it: "sha256:" and 64 lowercase hex. */
export function isConfigDigest(value: unknown): value is string {
  return typeof value === 'string' && CONFIG_DIGEST.test(value);
}

/**
 * The one check of an operator's digest (CLI `rollback --to`, the control endpoint, the
 * engine): the digest names a file in the state directory, so nothing else may pass.
 */
export function checkConfigDigest(value: string, what = 'digest'): string {
  if (!isConfigDigest(value)) {
    throw new AgentError('USAGE', `${what} must be "sha256:" followed by 64 lowercase hex digits, got ${JSON.stringify(String(value).slice(0, 80))}`);
  }
  return value;
}
