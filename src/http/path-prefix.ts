/**
 * Our routers (admin API, sign-in and consent, the account page) each serve one path prefix, yet
 * every request passes them on its way to oidc-provider's endpoints, and each runs its whole list
 * of route patterns against the path. A request outside the prefix goes straight to the next
 * middleware instead. @koa/router matches case-insensitively, so the prefix is compared that way.
 */
import type { Context, Next } from 'koa';
import { pathOf } from './request-context.ts';

export function onlyUnder<C extends Context, R>(prefix: string, middleware: (ctx: C, next: Next) => R): (ctx: C, next: Next) => R | Promise<void> {
  const folded = prefix.toLowerCase();
  return function underPrefix(ctx, next) {
    const path = pathOf(ctx);
    return path !== undefined && path.slice(0, folded.length).toLowerCase() === folded ? middleware(ctx, next) : next();
  };
}
