/**
 * The per-client limit on the token endpoint. A request is counted when oidc-provider looks its
 * client up to authenticate it, atomically (so a parallel burst is cut at exactly the limit), and
 * the count is taken back when the request ends without a token: requests that fail to
 * authenticate as a client cannot spend that client's allowance.
 */
import Provider from 'oidc-provider';
import { TooManyRequests } from '../errors.ts';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { metrics } from '../metrics/metrics.ts';
import type { RateLimiter, Reservation } from './rate-limit.ts';

const MINUTE = 60;

interface Counted {
  reservation: Reservation;
  issued: boolean;
}

export function tokenEndpointLimit(limiter: RateLimiter, defaultPerMinute: number) {
  const windowFor = (own: number | null) => ({ limit: own ?? defaultPerMinute, seconds: MINUTE });
  /** The reservation of each token request in flight (a client may be looked up more than once). */
  const counted = new WeakMap<object, Counted>();
  return {
    async clientFound(clientId: string, own: number | null): Promise<void> {
      const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
      if (ctx?.oidc?.route !== 'token' || counted.has(ctx)) return;
      const reservation = await limiter.reserve('token', clientId, windowFor(own));
      if (!reservation.allowed) {
        metrics.rateLimitRefused('token');
        ctx.set('Retry-After', String(reservation.retryAfter));
        throw new TooManyRequests(
          `this client may make ${windowFor(own).limit} token requests a minute; retry after ${reservation.retryAfter} s`,
          reservation.retryAfter,
        );
      }
      const entry: Counted = { reservation, issued: false };
      counted.set(ctx, entry);
      // 'close' fires once the response is done (or the socket gone): no token, no count.
      ctx.res.once('close', () => {
        if (!entry.issued) void reservation.release();
      });
    },
    /** Keeps the count of a request that issued a token (counts it if it was not counted yet). */
    async issued(clientId: string): Promise<void> {
      const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
      const entry = ctx && counted.get(ctx);
      if (entry) {
        entry.issued = true;
        return;
      }
      await limiter.hit('token', clientId, windowFor(null));
    },
  };
}
