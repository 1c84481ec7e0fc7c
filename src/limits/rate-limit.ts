/**
 * Fixed-window counters in the key-value store (Redis across instances). A limiter that cannot
 * reach its store lets requests through: limits protect capacity, and losing Redis must not stop
 * every agent from getting tokens. Replay protection never depends on this (it is in Postgres).
 */
import type { Logger } from 'pino';
import type { Kv } from '../storage/kv.ts';

export interface Window {
  /** How many events a window admits. */
  limit: number;
  seconds: number;
}

export interface Verdict {
  allowed: boolean;
  /** Seconds until the current window ends (for Retry-After). */
  retryAfter: number;
}

export interface RateLimiter {
  /** Whether one more event fits, without counting it (counted with `hit` once it happened). */
  check(bucket: string, key: string, window: Window): Promise<Verdict>;
  /** Counts one event and says whether it fitted. */
  hit(bucket: string, key: string, window: Window): Promise<Verdict>;
}

export function createRateLimiter(kv: Kv, log: Logger): RateLimiter {
  const slot = (window: Window) => Math.floor(Date.now() / 1000 / window.seconds);
  const keyFor = (bucket: string, key: string, window: Window) => `rl:${bucket}:${key}:${slot(window)}`;
  const retryAfter = (window: Window) => window.seconds - (Math.floor(Date.now() / 1000) % window.seconds);

  async function count(read: () => Promise<number>): Promise<number> {
    try {
      return await read();
    } catch (err) {
      log.warn({ err }, 'rate limit store unavailable; letting the request through');
      return 0;
    }
  }

  return {
    async check(bucket, key, window) {
      const n = await count(async () => Number((await kv.get(keyFor(bucket, key, window))) ?? 0));
      return { allowed: n < window.limit, retryAfter: retryAfter(window) };
    },
    async hit(bucket, key, window) {
      const n = await count(() => kv.incr(keyFor(bucket, key, window), window.seconds));
      return { allowed: n <= window.limit, retryAfter: retryAfter(window) };
    },
  };
}
