/**
 * Our middleware and routes, mounted on an oidc-provider instance (which is itself a Koa app).
 * `provider.use` places each one ahead of the provider's own router, in this order.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Config } from '../config.ts';
import type { RateLimiter } from '../limits/rate-limit.ts';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.ts';
import { accountRoutes } from '../account/routes.ts';
import { adminAuditRoute } from '../admin/audit-route.ts';
import { adminApi, adminFallback } from '../admin/routes.ts';
import { adminTokenVerifier, type AdminToken } from '../admin/tokens.ts';
import type { OperationContext } from '../cli/operations.ts';
import { registrationGate } from '../clients/dynamic-registration.ts';
import { auditProviderEvents } from '../oauth/provider-events.ts';
import { createFormGuard } from './forms.ts';
import { explainClientAuthFailures } from '../clients/authentication-failures.ts';
import { correctTokenErrors } from '../oauth/error-corrections.ts';
import { explainDpopFailures } from '../oauth/dpop.ts';
import { interactionRoutes } from '../interactions/routes.ts';
import { measureRequests, metricsRoute, nameRoute } from '../metrics/http.ts';
import { createHashQueue } from '../users/hash-queue.ts';
import { createSignInGuard } from '../users/sign-in-guard.ts';
import type { Db } from '../storage/db.ts';
import type { Kv } from '../storage/kv.ts';
import { UNAVAILABLE, isDependencyError } from './dependency-errors.ts';
import { errorHandler, renderErrorPage } from './errors.ts';
import { nameProviderRoute } from './provider-route.ts';
import { pathOf, requestContext, withRequestContext } from './request-context.ts';
import { refuseNulInQuery } from './nul-characters.ts';
import { securityHeaders } from './security-headers.ts';
import { requestTransaction } from './transaction.ts';
import { STATIC_DIR, type Views } from './views.ts';

export interface AppDeps {
  db: Db;
  kv: Kv;
  log: Logger;
  views: Views;
  audit: AuditLog;
  introspectionSampleRate: number;
  /** Named bearer tokens of the admin API; none: it does not exist. */
  adminTokens: AdminToken[];
  /** What the admin API's operations run with (as the CLI's do). */
  operations: OperationContext;
  /** Whether GET /metrics is served on this port (behind the admin tokens); false with METRICS_PORT. */
  metricsHere: boolean;
  openRegistration: boolean;
  limiter: RateLimiter;
  limits: Config['limits'];
  /** Counts an issued token against its client's token endpoint limit. */
  countIssuedToken(clientId: string): Promise<void>;
  cookieKeys: string[];
}

const STYLESHEET = readFileSync(path.join(STATIC_DIR, 'app.css'));

/**
 * scrypt is CPU on libuv's threads: at most half the cores hash at once, so a sign-in flood
 * leaves the rest to agents' token requests (measured in bench/sign-in-and-purge.ts); 32 waiting
 * is a few seconds of hashing, after which a sign-in is told to retry.
 */
const PASSWORD_HASHES_AT_ONCE = Math.max(1, Math.floor(availableParallelism() / 2));
const PASSWORD_HASHES_WAITING = 32;

export function mountApp(provider: Provider, deps: AppDeps): Provider {
  const { db, kv, log, views } = deps;
  provider.use(withRequestContext(log));
  provider.use(measureRequests());
  provider.use(errorHandler(views));
  provider.use(securityHeaders);
  provider.use(async function refuseMalformedTarget(ctx: Context, next: Next) {
    if (pathOf(ctx) !== undefined) return next();
    // Nothing below may read ctx.path (it throws): answer here, with the headers already set.
    requestContext()?.log.warn({ method: ctx.method, targetLength: ctx.url.length }, 'malformed request-target refused');
    renderErrorPage(ctx, views, 400, 'invalid_request', 'The request target is not a valid URL.');
  });
  provider.use(nameProviderRoute(provider));
  provider.use(refuseNulInQuery);
  provider.use(async function dependencyOutage(ctx: Context, next: Next) {
    await next();
    if (ctx.status !== 500 || !(ctx.state as { dependencyDown?: boolean }).dependencyDown) return;
    ctx.set('Retry-After', '1');
    renderErrorPage(ctx, views, 503, UNAVAILABLE.error, 'The service is temporarily unavailable; try again shortly.');
  });
  provider.use(async function healthAndStatic(ctx: Context, next: Next) {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
    if (ctx.path === '/healthz') {
      nameRoute(ctx, 'healthz');
      ctx.body = { status: 'ok' };
    } else if (ctx.path === '/readyz') {
      nameRoute(ctx, 'readyz');
      const [database, store] = await Promise.all([
        db.query('SELECT 1').then(
          () => true,
          () => false,
        ),
        kv.ping(),
      ]);
      ctx.status = database && store ? 200 : 503;
      ctx.body = { status: database && store ? 'ready' : 'unavailable', database, store };
    } else if (ctx.path === '/static/app.css') {
      nameRoute(ctx, 'static');
      ctx.type = 'text/css';
      ctx.set('Cache-Control', 'public, max-age=3600');
      ctx.body = STYLESHEET;
    } else {
      return next();
    }
  });
  // Outside the request transaction: a scrape holds no connection while it renders.
  provider.use(metricsRoute(deps.metricsHere && deps.adminTokens.length > 0 ? adminTokenVerifier(deps.adminTokens) : undefined));
  // The admin API runs each operation in its own transaction, as the CLI does.
  const admin = adminApi(deps.operations, deps.adminTokens);
  provider.use(admin.routes());
  provider.use(adminAuditRoute(db, deps.audit, adminTokenVerifier(deps.adminTokens), deps.adminTokens.length > 0));
  provider.use(adminFallback(deps.adminTokens.length > 0));
  provider.use(requestTransaction(db));
  provider.use(correctTokenErrors);
  provider.use(registrationGate(db, deps.openRegistration, deps.limiter, { limit: deps.limits.registrationPerHour, seconds: 3600 }));
  // One CSRF scheme for every page: interactions bind their tokens to the uid, the account page to its session.
  const forms = createFormGuard(deps.cookieKeys[0]!);
  const interactions = interactionRoutes({
    provider,
    db,
    views,
    audit: deps.audit,
    forms,
    signInGuard: createSignInGuard(kv, deps.limiter, deps.cookieKeys[0]!, {
      perAddress: deps.limits.loginFailuresPer15Minutes,
      perAccount: deps.limits.loginFailuresPerAccount15Minutes,
    }),
    hashQueue: createHashQueue(PASSWORD_HASHES_AT_ONCE, PASSWORD_HASHES_WAITING),
  });
  provider.use(interactions.routes());
  provider.use(interactions.allowedMethods());
  const account = accountRoutes({ provider, issuer: provider.issuer, db, views, audit: deps.audit, forms });
  provider.use(account.routes());
  provider.use(account.allowedMethods());
  auditProviderEvents(provider, deps.audit, log, deps.introspectionSampleRate);
  explainClientAuthFailures(provider, { db, audit: deps.audit, log });
  explainDpopFailures(provider, { db, audit: deps.audit, log });
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    if ((ctx.state as { refreshRetry?: boolean }).refreshRetry) return; // nothing was issued
    const clientId = ctx.oidc.client?.clientId;
    if (clientId) deps.countIssuedToken(clientId).catch((err: unknown) => log.warn({ err }, 'token count failed'));
  });
  provider.on('server_error', (ctx: Context, err: unknown) => {
    log.error({ err }, 'oidc-provider server error');
    // oidc-provider answers every unexpected error with 500; an unreachable dependency is a 503.
    if (isDependencyError(err)) (ctx.state as { dependencyDown?: boolean }).dependencyDown = true;
  });
  return provider;
}
