/**
 * Limits on password guessing, counted before any password is checked.
 *
 * Three fixed-window counters of failed sign-ins, each reserved atomically ahead of the check
 * (so a burst of parallel guesses cannot all pass a read-then-count gate):
 * - the account + address pair: what locks. A user behind a shared NAT is not locked out by
 *   someone else's guesses at another account, and a known-good address is not locked out of its
 *   own account by a botnet's guesses from elsewhere;
 * - the address, over every account: one address cannot spray guesses across accounts;
 * - the account, over every address: a botnet cannot guess one account's password slowly.
 * A pair that signed in successfully before (a known-good address) answers only to the pair limit.
 * The account is named by a keyed hash of the typed name (one name, one account): counting needs
 * no database round trip, so a refused guess costs the database nothing and holds no connection,
 * unknown names are limited alike, and nothing typed into the name field is stored.
 */
import { createHmac, hkdfSync } from 'node:crypto';
import type { RateLimiter, Reservation, Window } from '../limits/rate-limit.ts';
import type { Kv } from '../storage/kv.ts';

const WINDOW_SECONDS = 15 * 60;
/** How long an address stays known-good for an account after a successful sign-in. */
const KNOWN_GOOD_SECONDS = 90 * 24 * 3600;

export interface SignInLimits {
  /** Failed sign-ins per account and address, and per address over all accounts. */
  perAddress: number;
  /** Failed sign-ins per account over all addresses. */
  perAccount: number;
}

export type Admission =
  | { allowed: true /** Takes the reserved failure back: the attempt was not a failed guess. */; release(): Promise<void> }
  | { allowed: false; retryAfter: number };

export interface SignInGuard {
  /** Keyed hash of a typed name: what stands for an account that does not exist. */
  nameHash(username: string): string;
  /** Reserves one failed sign-in of `subject` (a name hash) from `address`. */
  admit(subject: string, address: string): Promise<Admission>;
  /** Records that `address` signed in to `subject`: it becomes known-good. */
  succeeded(subject: string, address: string): Promise<void>;
}

export function createSignInGuard(kv: Kv, limiter: RateLimiter, secret: string, limits: SignInLimits): SignInGuard {
  // A key of its own, derived from the cookie key: the hash is not a cookie signature.
  const nameKey = Buffer.from(hkdfSync('sha256', secret, '', 'agentauth sign-in name hash', 32));
  const window = (limit: number): Window => ({ limit, seconds: WINDOW_SECONDS });
  const knownKey = (subject: string, address: string) => `login-known:${subject}:${address}`;

  async function isKnownGood(subject: string, address: string): Promise<boolean> {
    try {
      return (await kv.get(knownKey(subject, address))) !== null;
    } catch {
      return false; // the store is down: the stricter limits apply
    }
  }

  return {
    nameHash: (username) => createHmac('sha256', nameKey).update(username).digest('base64url'),

    async admit(subject, address) {
      const reservations: Reservation[] = [];
      const releaseAll = async () => {
        await Promise.all(reservations.map((r) => r.release()));
      };
      const buckets: [string, string, Window][] = [['login-failure-pair', `${subject}:${address}`, window(limits.perAddress)]];
      if (!(await isKnownGood(subject, address))) {
        buckets.push(['login-failure', address, window(limits.perAddress)], ['login-failure-account', subject, window(limits.perAccount)]);
      }
      for (const [bucket, key, w] of buckets) {
        const reservation = await limiter.reserve(bucket, key, w);
        if (!reservation.allowed) {
          await releaseAll();
          return { allowed: false, retryAfter: reservation.retryAfter };
        }
        reservations.push(reservation);
      }
      return { allowed: true, release: releaseAll };
    },

    async succeeded(subject, address) {
      await kv.set(knownKey(subject, address), '1', KNOWN_GOOD_SECONDS).catch(() => {});
    },
  };
}
