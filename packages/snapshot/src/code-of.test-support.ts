import { SnapshotError } from './errors.js';

/** The code a call refuses with, undefined when it returns, and "untyped:…" for anything but a SnapshotError. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof SnapshotError ? error.code : `untyped:${String(error)}`;
  }
  return undefined;
}
