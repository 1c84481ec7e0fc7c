/**
 * NUL characters in request input. A NUL that reached a query (a nonce in an authorization
 * code's payload, a username) answered 500, since PostgreSQL cannot store it. Every way in
 * refuses it with 400 invalid_request instead: the query string of any request (here: the
 * authorization endpoint takes GET only), the forms of our own pages (forms.ts) and, as the last
 * line, anything the adapter would store (oauth/oidc-adapter.ts), JSON registrations included.
 */
import type { Context, Next } from 'koa';
import { NUL_REFUSED } from '../storage/nul.ts';
import { InvalidRequest } from '../errors.ts';

export async function refuseNulInQuery(ctx: Context, next: Next): Promise<void> {
  // %00 is how a NUL travels in a URL; a raw one cannot, but is refused the same.
  if (/%00|\u0000/.test(ctx.querystring)) throw new InvalidRequest(NUL_REFUSED);
  await next();
}
