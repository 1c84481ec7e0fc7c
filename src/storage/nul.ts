/**
 * PostgreSQL stores no NUL character in text or jsonb: a value holding one fails in the driver
 * (a 500). Every way in refuses such input first, as the client's error (400): see
 * http/nul-characters.ts.
 */
export const NUL_REFUSED = 'Request parameters must not contain NUL characters.';

/** Whether a value, or any string within it (keys included), holds a NUL. */
export function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(containsNul);
  if (value !== null && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\u0000') || containsNul(v));
  return false;
}
