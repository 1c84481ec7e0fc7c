/**
 * Synchronizer tokens for the interaction forms: an HMAC of the interaction uid under a key
 * derived from the cookie keys. The interaction itself is bound to the browser by its cookie,
 * so a form posted from elsewhere, or for another interaction, fails.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

export interface Csrf {
  tokenFor(uid: string): string;
  verify(uid: string, token: string | null): boolean;
}

export function createCsrf(cookieKey: string): Csrf {
  const key = Buffer.from(hkdfSync('sha256', cookieKey, 'agentauth', 'csrf-token', 32));
  const tokenFor = (uid: string) => createHmac('sha256', key).update(`interaction:${uid}`).digest('base64url');
  return {
    tokenFor,
    verify(uid, token) {
      if (!token) return false;
      const expected = Buffer.from(tokenFor(uid));
      const actual = Buffer.from(token);
      return actual.length === expected.length && timingSafeEqual(actual, expected);
    },
  };
}
