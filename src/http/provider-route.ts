/**
 * Which oidc-provider endpoint a request is for. oidc-provider's router folds case and ignores
 * one trailing slash, so `/reg/`, `/REG` and `/token/introspection/` are the same endpoints as
 * their plain spellings: any check written as `ctx.path === '/reg'` is skipped by them. This asks
 * the provider's own router instead, once per request, and every check reads the answer.
 */
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

/** The route oidc-provider's router runs for this method and path, if any. */
export function matchProviderRoute(provider: Provider, method: string, path: string): ProviderRoute | undefined {
  return instance(provider).router.match(method, path)?.route.name;
}

/** The first of our middleware after request-target checks: asks the provider's router once. */
export function nameProviderRoute(provider: Provider) {
  return async function nameRoute(ctx: Context, next: Next): Promise<void> {
    const route = matchProviderRoute(provider, ctx.method, ctx.path);
    if (route) (ctx.state as RoutedState)[ROUTE] = route;
    return next();
  };
}
