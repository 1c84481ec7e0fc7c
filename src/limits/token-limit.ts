/**
 * The per-client limit on the token endpoint. The client is checked when oidc-provider looks it
 * up to authenticate it, and counted only once a token was issued: requests that fail to
 * authenticate as a client cannot spend that client's allowance.
 */
import Provider, { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { metrics } from '../metrics/metrics.ts';
import type { RateLimiter } from './rate-limit.ts';

const MINUTE = 60;

/** 429 in the shape oidc-provider renders its errors. */
class TooManyRequests extends errors.OIDCProviderError {
  constructor(description: string) {
    super(429, 'too_many_requests');
    this.error_description = description;
    this.expose = true;
  }
}

export function tokenEndpointLimit(limiter: RateLimiter, defaultPerMinute: number) {
  const windowFor = (own: number | null) => ({ limit: own ?? defaultPerMinute, seconds: MINUTE });
  return {
    async clientFound(clientId: string, own: number | null): Promise<void> {
      const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
      if (ctx?.oidc?.route !== 'token') return;
      const verdict = await limiter.check('token', clientId, windowFor(own));
      if (verdict.allowed) return;
      metrics.rateLimitRefused('token');
      ctx.set('Retry-After', String(verdict.retryAfter));
      throw new TooManyRequests(`this client may make ${windowFor(own).limit} token requests a minute; retry after ${verdict.retryAfter} s`);
    },
    /** Counts an issued token against the client that received it. */
    async issued(clientId: string): Promise<void> {
      await limiter.hit('token', clientId, windowFor(null));
    },
  };
}
