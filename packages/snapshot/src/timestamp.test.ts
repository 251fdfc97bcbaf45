import { describe, expect, it } from 'vitest';

import { isLeapYear, isRfc3339Utc } from './timestamp.js';

describe('isRfc3339Utc', () => {
  it.each([
    '2026-11-25T12:00:00Z',
    '2026-02-28T23:59:59Z',
    '2024-02-29T00:00:00Z',
    '2000-02-29T00:00:00Z',
    '2026-12-31T23:59:59.999999999Z',
    '2026-04-30T00:00:00.5Z',
  ])('accepts %s', (text) => {
    expect(isRfc3339Utc(text)).toBe(true);
  });

  it.each([
    ['February 30', '2026-02-30T00:00:00Z'],
    ['February 29 in a common year', '2026-02-29T00:00:00Z'],
    ['February 29 in a century that is not a leap year', '1900-02-29T00:00:00Z'],
    ['April 31', '2026-04-31T00:00:00Z'],
    ['day 0', '2026-01-00T00:00:00Z'],
    ['month 0', '2026-00-10T00:00:00Z'],
    ['month 13', '2026-13-01T00:00:00Z'],
    ['hour 24', '2026-11-25T24:00:00Z'],
    ['minute 60', '2026-11-25T12:60:00Z'],
    ['a leap second', '2016-12-31T23:59:60Z'],
    ['an offset other than Z', '2026-11-25T12:00:00+00:00'],
    ['a lowercase z', '2026-11-25T12:00:00z'],
    ['a space for T', '2026-11-25 12:00:00Z'],
    ['no seconds', '2026-11-25T12:00Z'],
    ['an empty fraction', '2026-11-25T12:00:00.Z'],
    ['a date alone', '2026-11-25'],
  ])('refuses %s', (_, text) => {
    expect(isRfc3339Utc(text)).toBe(false);
  });
});

describe('isLeapYear', () => {
  it('follows the Gregorian rule', () => {
    expect([2024, 2000, 2400].map(isLeapYear)).toEqual([true, true, true]);
    expect([2026, 1900, 2100].map(isLeapYear)).toEqual([false, false, false]);
  });
});
