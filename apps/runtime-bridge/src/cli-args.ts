import { InvalidArgumentError } from 'commander';

/** commander parser for counts and durations: a clear usage error instead of NaN. */
export function nonNegativeInt(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new InvalidArgumentError(`expected a non-negative integer, found ${value}`);
  return parsed;
}
