/**
 * Strict RFC 3339 UTC timestamps (SPEC §3). Date.parse is not a checker: it rolls February 30
 * over into March and reads hour 24 as the next midnight, so a snapshot could carry a date that
 * two implementations read differently. This one insists every field is in range.
 */
const SHAPE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z$/;

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] as const;

/** Gregorian leap years: every fourth, except centuries not divisible by 400. */
export function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/**
 * True when `text` is `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with a real calendar date and a time of
 * day from 00:00:00 to 23:59:59. A leap second (:60) is refused: JavaScript's clock cannot
 * represent it, so it could not be compared with `now` the way the signer meant.
 */
export function isRfc3339Utc(text: string): boolean {
  const m = SHAPE.exec(text);
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12) return false;
  const monthDays = month === 2 && isLeapYear(year) ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0);
  if (day < 1 || day > monthDays) return false;
  return hour <= 23 && minute <= 59 && second <= 59;
}
