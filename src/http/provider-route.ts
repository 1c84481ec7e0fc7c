/**
 * Which oidc-provider endpoint a request is for. oidc-provider's router folds case and ignores
 * one trailing slash, so `/reg/`, `/REG` and `/token/introspection/` are the same endpoints as
 * their plain spellings: any check written as `ctx.path === '/reg'` is skipped by them. This asks
 * the provider's own router instead, once per request, and every check reads the answer.
 */
import type { IncomingMessage } from 'node:http';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

/** oidc-provider's route names for the endpoints agentauth looks at. */
export type ProviderRoute =
  | 'authorization'
  | 'resume'
  | 'token'
  | 'introspection'
  | 'revocation'
  | 'registration'
  | 'client'
  | 'pushed_authorization_request'
  | 'jwks'
  | 'discovery'
  | 'userinfo'
  | 'end_session'
  | (string & {});

const ROUTE = Symbol('providerRoute');

interface RoutedState {
  [ROUTE]?: ProviderRoute;
}

/** The endpoint the provider's router would run for this request, if any (set by `nameProviderRoute`). */
export const providerRouteOf = (ctx: Context): ProviderRoute | undefined => (ctx.state as RoutedState)[ROUTE];

/** The path of a request-target as Koa reads it, or undefined when it is not a URL. */
function pathOfTarget(target: string): string | undefined {
  if (target.startsWith('/')) return target.split('?')[0];
  return URL.parse(target)?.pathname;
}

/** Each request is matched once: by the dispatcher, and read again by the middleware below. */
const matched = new WeakMap<IncomingMessage, ProviderRoute | null>();

/**
 * The route oidc-provider's router runs for this request, if any. Every provider built from our
 * configuration has the same routes, so the answer does not depend on which instance serves it.
 */
export function routeOfRequest(provider: Provider, req: IncomingMessage): ProviderRoute | undefined {
  let route = matched.get(req);
  if (route === undefined) {
    const path = pathOfTarget(req.url ?? '/');
    route = (path === undefined ? undefined : instance(provider).router.match(req.method ?? 'GET', path)?.route.name) ?? null;
    matched.set(req, route);
  }
  return route ?? undefined;
}

/** The first of our middleware after request-target checks: names the route for every check below. */
export function nameProviderRoute(provider: Provider) {
  return async function nameRoute(ctx: Context, next: Next): Promise<void> {
    const route = routeOfRequest(provider, ctx.req);
    if (route) (ctx.state as RoutedState)[ROUTE] = route;
    return next();
  };
}
