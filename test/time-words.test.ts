/** How the account page says a time (src/http/time-words.ts), table-tested with a fixed clock. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { timeWords } from '../src/http/time-words.ts';

describe('times in words', () => {
  const now = new Date('2026-12-01T10:00:00Z');
  const ago = (seconds: number) => new Date(now.getTime() - seconds * 1000);
  const table: [number, string][] = [
    [0, 'just now'],
    [44, 'just now'],
    [45, '1 minute ago'],
    [90, '2 minutes ago'],
    [59 * 60, '59 minutes ago'],
    [3600, '1 hour ago'],
    [5 * 3600, '5 hours ago'],
    [23 * 3600, '23 hours ago'],
    [24 * 3600, 'yesterday'],
    [47 * 3600, 'yesterday'],
    [48 * 3600, '2 days ago'],
    [29 * 86400, '29 days ago'],
    [30 * 86400, '1 Nov 2026'],
    [400 * 86400, '27 Oct 2025'],
  ];
  for (const [seconds, words] of table) {
    it(`${seconds} s ago is "${words}"`, () => assert.equal(timeWords(ago(seconds), now).words, words));
  }
  it('keeps the exact time for the tooltip and the datetime attribute', () => {
    assert.deepEqual(timeWords(new Date('2026-10-03T07:05:09.123Z'), now), {
      iso: '2026-10-03T07:05:09.123Z',
      words: '3 Oct 2026',
      full: '3 Oct 2026, 07:05 UTC',
    });
  });
});
