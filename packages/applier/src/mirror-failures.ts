import { ApplyError, type MirrorFailure, messageOf } from './errors.js';

/** A full disk or quota, from a write or a short write. */
export function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** The host of a mirror URL, the most a per-mirror detail names. */
export function hostOf(url: string): string {
  return URL.canParse(url) ? new URL(url).hostname : '(an unparsable URL)';
}

export function mirrorFailure(index: number, host: string, error: unknown): MirrorFailure {
  if (error instanceof ApplyError) return { index, code: error.code, detail: error.message };
  return { index, code: 'MIRROR_UNREACHABLE', detail: `${host}: ${messageOf(error)}` };
}

/**
 * The one error for a model no mirror could deliver. Its message names only the model and the
 * codes, because it travels (last_error, heartbeat, status); hosts, statuses and sizes stay on
 * `mirrors`, for the local audit log. When every mirror refuted the signed bytes the same way,
 * that code is kept, being more precise than DOWNLOAD_FAILED.
 */
export function allMirrorsFailed(label: string, failures: MirrorFailure[]): ApplyError {
  if (failures.length === 0) return new ApplyError('DOWNLOAD_FAILED', `model ${label} has no URL`);
  const codes = failures.map((f) => f.code);
  const first = codes[0];
  const same = codes.every((c) => c === first);
  const code = same && (first === 'HASH_MISMATCH' || first === 'SIZE_MISMATCH') ? first : 'DOWNLOAD_FAILED';
  const which = failures.length === 1 ? 'its only mirror failed' : `all ${failures.length} mirrors failed`;
  return new ApplyError(code, `model ${label}: ${which} (${codes.join(', ')})`, { mirrors: failures });
}
