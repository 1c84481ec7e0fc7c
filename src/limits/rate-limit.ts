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

/** An event counted before it happens; `release` takes it back if it turns out not to count. */
export interface Reservation extends Verdict {
  /** Undoes the count (idempotent). A refused reservation is already released. */
  release(): Promise<void>;
}

export interface RateLimiter {
  /** Whether one more event fits, without counting it (counted with `hit` once it happened). */
  check(bucket: string, key: string, window: Window): Promise<Verdict>;
  /** Counts one event and says whether it fitted. */
  hit(bucket: string, key: string, window: Window): Promise<Verdict>;
  /**
   * Counts one event ahead, atomically, so concurrent requests cannot all pass a check before
   * any of them is counted: of N at once, exactly `limit` are allowed. Refused ones are not kept.
   */
  reserve(bucket: string, key: string, window: Window): Promise<Reservation>;
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
    async reserve(bucket, key, window) {
      // The key is fixed now: a release after the window turned must not touch the next one.
      const counter = keyFor(bucket, key, window);
      const n = await count(() => kv.incr(counter, window.seconds));
      let held = n > 0;
      const release = async () => {
        if (!held) return;
        held = false;
        await kv.decr(counter).catch((err: unknown) => log.warn({ err }, 'rate limit store unavailable; count not taken back'));
      };
      const allowed = n <= window.limit;
      if (!allowed) await release();
      return { allowed, retryAfter: retryAfter(window), release };
    },
  };
}
