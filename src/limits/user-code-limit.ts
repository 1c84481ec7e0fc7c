/**
 * Guessing user codes (RFC 8628 §5.1): a user code is short by design, so what keeps an attacker
 * from trying codes until one fits somebody's waiting terminal is a limit on tries. Every POST of
 * the code page counts, per address, counted before the code is looked up (so of a parallel burst
 * only the limit go through); a legitimate user needs two (the code, then the confirmation).
 */
import type { Context, Next } from 'koa';
import { TooManyRequests } from '../errors.ts';
import { providerRouteOf } from '../http/provider-route.ts';
import { metrics } from '../metrics/metrics.ts';
import type { RateLimiter, Window } from './rate-limit.ts';

export const USER_CODE_TRIES: Window = { limit: 10, seconds: 5 * 60 };

export function userCodeGuessLimit(limiter: RateLimiter, window: Window = USER_CODE_TRIES) {
  return async function limitUserCodeGuesses(ctx: Context, next: Next): Promise<void> {
    if (ctx.method !== 'POST' || providerRouteOf(ctx) !== 'code_verification') return next();
    const verdict = await limiter.reserve('user_code', ctx.ip, window);
    if (!verdict.allowed) {
      metrics.rateLimitRefused('user_code');
      throw new TooManyRequests(`Too many codes tried. Try again in ${Math.ceil(verdict.retryAfter / 60)} minutes.`, verdict.retryAfter);
    }
    return next();
  };
}
