/**
 * Where oidc-provider's error code differs from the one RFC 6749 names, correct it on the way out.
 */
import type { Context, Next } from 'koa';
import { providerRouteOf } from '../http/provider-route.ts';

interface OAuthErrorBody {
  error?: unknown;
  error_description?: unknown;
}

// RFC 6749 §5.2: a client using a grant type it is not registered for gets unauthorized_client.
const GRANT_TYPE_NOT_ALLOWED = 'requested grant type is not allowed for this client';

export async function correctTokenErrors(ctx: Context, next: Next): Promise<void> {
  await next();
  if (providerRouteOf(ctx) !== 'token' || ctx.status !== 400) return;
  const body = ctx.body as OAuthErrorBody | undefined;
  if (body?.error === 'invalid_request' && body.error_description === GRANT_TYPE_NOT_ALLOWED) {
    ctx.body = { ...body, error: 'unauthorized_client' };
  }
}
