/**
 * Times as a reader says them ("2 minutes ago", "yesterday", "3 Nov 2026"), with the exact time
 * for the tooltip and the machine-readable value for <time datetime>. Rendered on the server:
 * pages run no script, and the words stay true long enough for a page someone is reading.
 */
export interface TimeWords {
  /** ISO 8601, for the datetime attribute. */
  iso: string;
  /** What the page says. */
  words: string;
  /** The full time, UTC, shown on hover. */
  full: string;
}

const MINUTE = 60;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'} ago`;
const calendarDate = (d: Date) => `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}`;

export function timeWords(at: Date, now: Date = new Date()): TimeWords {
  const seconds = Math.round((now.getTime() - at.getTime()) / 1000);
  let words: string;
  if (seconds < 45) words = 'just now';
  else if (seconds < HOUR) words = plural(Math.max(1, Math.round(seconds / MINUTE)), 'minute');
  else if (seconds < DAY) words = plural(Math.round(seconds / HOUR), 'hour');
  else if (seconds < 2 * DAY) words = 'yesterday';
  else if (seconds < 30 * DAY) words = plural(Math.round(seconds / DAY), 'day');
  else words = calendarDate(at);
  const hhmm = at.toISOString().slice(11, 16);
  return { iso: at.toISOString(), words, full: `${calendarDate(at)}, ${hhmm} UTC` };
}

/** How long until a future moment, for an expiry ("in 9 minutes", "in 2 hours"); past: "expired". */
export function untilWords(at: Date, now: Date = new Date()): TimeWords {
  const seconds = Math.round((at.getTime() - now.getTime()) / 1000);
  const inUnits = (n: number, unit: string) => `in ${n} ${unit}${n === 1 ? '' : 's'}`;
  let words: string;
  if (seconds <= 0) words = 'expired';
  else if (seconds < MINUTE) words = 'in less than a minute';
  else if (seconds < HOUR) words = inUnits(Math.floor(seconds / MINUTE), 'minute');
  else if (seconds < DAY) words = inUnits(Math.floor(seconds / HOUR), 'hour');
  else words = inUnits(Math.floor(seconds / DAY), 'day');
  const hhmm = at.toISOString().slice(11, 16);
  return { iso: at.toISOString(), words, full: `${calendarDate(at)}, ${hhmm} UTC` };
}
