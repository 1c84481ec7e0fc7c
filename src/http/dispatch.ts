/**
 * Hands each request to the current provider. oidc-provider takes keys, scopes and resource
 * servers at construction, so a change builds a new provider; a request to an endpoint whose
 * answer depends on them first makes sure the provider is current (one shared generation read,
 * see live-provider.ts) and only then picks it, so the request that notices a change is itself
 * answered with it.
 */
import type { RequestListener } from 'node:http';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import { markConfirmed } from './confirmed-generation.ts';
import { routeOfRequest, type ProviderRoute } from './provider-route.ts';

/** Endpoints whose answers depend on the current signing keys, scopes or resource servers. */
const CONFIG_DEPENDENT = new Set<ProviderRoute>([
  'authorization',
  'resume',
  'token',
  'introspection',
  'revocation',
  'pushed_authorization_request',
  'jwks',
  'discovery',
  // Scopes and authorization details types are checked on these too (issue 19).
  'backchannel_authentication',
  'device_authorization',
  'code_verification',
  'device_resume',
]);

export interface LiveProviderView {
  current(): Provider;
  /** Reloads if another process changed keys, scopes, resource servers or clients; the generation confirmed current, if any. */
  ensureFresh(): Promise<string | undefined>;
}

export function dispatchToProvider(live: LiveProviderView, log: Logger): RequestListener {
  const handlers = new WeakMap<Provider, ReturnType<Provider['callback']>>();
  const handlerOf = (provider: Provider) => {
    let handler = handlers.get(provider);
    if (!handler) {
      handler = provider.callback();
      handlers.set(provider, handler);
    }
    return handler;
  };
  return (req, res) => {
    const route = routeOfRequest(live.current(), req);
    if (!route || !CONFIG_DEPENDENT.has(route)) return void handlerOf(live.current())(req, res);
    live
      .ensureFresh()
      .then((generation) => {
        // What is cached per generation (clients) may serve this request: see confirmedGenerationOf.
        if (generation) markConfirmed(req, generation);
      })
      // A reload that fails (the database is down) leaves the provider as it was: answer with it.
      .catch((err: unknown) => log.warn({ err }, 'configuration freshness check failed'))
      .then(() => handlerOf(live.current())(req, res));
  };
}
