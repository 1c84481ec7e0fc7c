/**
 * The application, composed: every feature's routes and hooks in front of an oidc-provider
 * instance (itself a Koa app), from an opened runtime and the configuration. It does no I/O:
 * src/main.ts opens storage, listens, and hands `buildProvider` to the live provider, which
 * calls it again whenever signing keys, scopes or resource servers change.
 * `provider.use` places each middleware ahead of the provider's own router, in this order.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import type { Config } from './config.ts';
import { createRateLimiter, type RateLimiter } from './limits/rate-limit.ts';
import { tokenEndpointLimit } from './limits/token-limit.ts';
import { accountRoutes } from './account/routes.ts';
import { adminAuditRoute } from './admin/audit-route.ts';
import { adminApi, adminFallback } from './admin/routes.ts';
import { adminTokenVerifier } from './admin/tokens.ts';
import { deleteRegisteredClient, registrationGate, storeRegisteredClient } from './clients/dynamic-registration.ts';
import { metadataDocumentHooks } from './clients/metadata-documents.ts';
import { auditGrantRevocation } from './oauth/provider-events.ts';
import { createAdapterClass } from './oauth/oidc-adapter.ts';
import { announceConfigChange } from './oauth/live-provider.ts';
import { bumpConfigGeneration } from './storage/generation.ts';
import { buildProvider } from './oauth/provider.ts';
import { installRefreshRotation } from './oauth/refresh-rotation.ts';
import { installTokenExchange } from './oauth/token-exchange.ts';
import { delegationClaims } from './delegation/claims.ts';
import { revocationReasonFromRequest } from './oauth/revocation-reason.ts';
import { resourceServerCache } from './resource-servers/store.ts';
import { tombstoneAndNotify } from './revocation/revoke.ts';
import type { VaultDeps } from './connections/vault.ts';
import type { JsonWebKey } from './keys/signing-keys.ts';
import type { Runtime } from './runtime.ts';
import { findAccountById } from './users/store.ts';
import { auditProviderEvents } from './oauth/provider-events.ts';
import { createFormGuard, type FormGuard } from './http/forms.ts';
import { explainClientAuthFailures } from './clients/authentication-failures.ts';
import { correctTokenErrors } from './oauth/error-corrections.ts';
import { DPOP_PROOF_WINDOW_SECONDS, dpopNonceSecrets, explainDpopFailures } from './oauth/dpop.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { measureRequests, metricsRoute, nameRoute } from './metrics/http.ts';
import { createHashQueue, type HashQueue } from './users/hash-queue.ts';
import { createSignInGuard, type SignInGuard } from './users/sign-in-guard.ts';
import { AgentauthError, InvalidRequest, TemporarilyUnavailable } from './errors.ts';
import { isDependencyError } from './http/dependency-errors.ts';
import { errorHandler, renderError } from './http/errors.ts';
import { nameProviderRoute } from './http/provider-route.ts';
import { onlyUnder } from './http/path-prefix.ts';
import { pathOf, requestContext, withRequestContext } from './http/request-context.ts';
import { refuseNulInQuery } from './http/nul-characters.ts';
import { securityHeaders } from './http/security-headers.ts';
import { requestTransaction } from './http/transaction.ts';
import { createViews, STATIC_DIR, type Views } from './http/views.ts';
import type { DetailsType } from './authorization-details/types.ts';
import { cibaHooks, type ApprovalDeps } from './approvals/ciba.ts';
import { devicePages } from './interactions/device.ts';
import { seal, unseal } from './keys/sealed.ts';
import { userCodeGuessLimit } from './limits/user-code-limit.ts';
import { installPollInterval } from './oauth/poll-interval.ts';

export interface AppDeps {
  config: Config;
  runtime: Runtime;
  log: Logger;
  /** The issuer, known once the socket listens (the port may be chosen by the system). */
  issuer: string;
}

export interface App {
  views: Views;
  /** A provider for these signing keys, scopes and authorization details types, with our middleware, routes and hooks installed. */
  buildProvider(signingKeys: JsonWebKey[], scopes: string[], detailsTypes: DetailsType[]): Provider;
  /** The outbox worker, once main started it: an approval with a ping starts a pass at once. */
  useDelivery(worker: { nudge(): void }): void;
}

const STYLESHEET = readFileSync(path.join(STATIC_DIR, 'app.css'));

/**
 * scrypt is CPU on libuv's threads: at most half the cores hash at once, so a sign-in flood
 * leaves the rest to agents' token requests (measured in bench/sign-in-and-purge.ts); 32 waiting
 * is a few seconds of hashing, after which a sign-in is told to retry.
 */
const PASSWORD_HASHES_AT_ONCE = Math.max(1, Math.floor(availableParallelism() / 2));
const PASSWORD_HASHES_WAITING = 32;

/** What the middleware shares across rebuilds of the provider. */
interface Shared extends AppDeps {
  views: Views;
  limiter: RateLimiter;
  tokenLimit: ReturnType<typeof tokenEndpointLimit>;
  forms: FormGuard;
  signInGuard: SignInGuard;
  hashQueue: HashQueue;
  vault: VaultDeps;
  approvals: ApprovalDeps;
}

export function buildApp(deps: AppDeps): App {
  const { config, runtime, log } = deps;
  const { db, kv, audit } = runtime;
  const views = createViews();
  const limiter = createRateLimiter(kv, log);
  const tokenLimit = tokenEndpointLimit(limiter, config.limits.tokenPerMinute);
  const onGrantRevoked = auditGrantRevocation(audit);
  /** Kills a grant inside the current request and audits why (reuse, revocation): one path. */
  const revokeGrantNow = async (grantId: string) => {
    // One reason, read once from the request, for the revocation events and the audit row.
    const reason = revocationReasonFromRequest();
    const revoked = await tombstoneAndNotify(db, grantId, reason);
    if (revoked) await onGrantRevoked(revoked, reason);
  };
  /** An RFC 7592 update or delete: every instance drops its cached clients before its next request. */
  const clientChanged = async () => {
    await bumpConfigGeneration(db);
    await db.afterCommit(() => announceConfigChange(db, kv).catch((err: unknown) => log.error({ err }, 'client change not announced')));
  };
  const Adapter = createAdapterClass(
    db,
    kv,
    {
      clientFound: tokenLimit.clientFound,
      revokeGrant: revokeGrantNow,
      storeClient: storeRegisteredClient(db, audit, runtime.clientPolicy, clientChanged),
      deleteClient: deleteRegisteredClient(db, audit, clientChanged),
      sealDeviceCode: (id) => seal(runtime.keyEncryptionKey, id, 'device-code'),
      unsealDeviceCode: (sealed) => unseal(runtime.keyEncryptionKey, sealed, 'device-code'),
    },
    // Assertions live at most CLIENT_ASSERTION_MAX_LIFETIME (+15 s tolerance), DPoP proofs 300 s.
    { replayHorizonSeconds: Math.max(config.clientAuth.maxAssertionLifetime + 15, DPOP_PROOF_WINDOW_SECONDS) },
  );
  const metadataDocuments = metadataDocumentHooks({
    db,
    audit,
    policy: runtime.clientPolicy,
    limiter,
    clientFound: tokenLimit.clientFound,
    fetchesPerIp: { limit: config.limits.registrationPerHour, seconds: 3600 },
  });
  const vault: VaultDeps = { db, kek: runtime.keyEncryptionKey, outbound: runtime.outbound, audit };
  let delivery: { nudge(): void } | undefined;
  const approvals: ApprovalDeps = {
    db,
    audit,
    keyEncryptionKey: runtime.keyEncryptionKey,
    pollIntervalSeconds: config.approvals.pollIntervalSeconds,
    webhookUrl: config.approvals.webhookUrl,
    nudgeDelivery: () => delivery?.nudge(),
  };
  const ciba = cibaHooks(approvals);
  const device = devicePages(views);
  const cookieKey = runtime.cookieKeys[0]!;
  const shared: Shared = {
    ...deps,
    views,
    limiter,
    tokenLimit,
    // One CSRF scheme for every page: interactions bind their tokens to the uid, the account page to its session.
    forms: createFormGuard(cookieKey),
    signInGuard: createSignInGuard(kv, limiter, cookieKey, {
      perAddress: config.limits.loginFailuresPer15Minutes,
      perAccount: config.limits.loginFailuresPerAccount15Minutes,
    }),
    hashQueue: createHashQueue(PASSWORD_HASHES_AT_ONCE, PASSWORD_HASHES_WAITING),
    vault,
    approvals,
  };

  return {
    views,
    useDelivery(worker) {
      delivery = worker;
    },
    buildProvider(signingKeys, scopes, detailsTypes) {
      const resources = resourceServerCache(db);
      const provider = buildProvider({
        issuer: deps.issuer,
        adapter: Adapter,
        signingKeys,
        scopes,
        detailsTypes,
        ciba,
        devicePages: device,
        cookieKeys: runtime.cookieKeys,
        ttl: config.ttl,
        trustProxy: config.trustProxy,
        clientAuth: config.clientAuth,
        outbound: runtime.outbound,
        findResourceServer: resources.find,
        introspectsFor: resources.introspectsFor,
        metadataDocuments: config.clientIdMetadataDocuments ? metadataDocuments : undefined,
        dpop: { ...config.dpop, nonceSecrets: dpopNonceSecrets(config.dpop.nonceSecrets, runtime.keyEncryptionKey) },
        withoutConnection: db.withoutConnection,
        delegationClaims: delegationClaims(db),
        async findAccount(_ctx, id) {
          const account = await findAccountById(db, id);
          if (!account || account.disabled) return undefined;
          return { accountId: account.id, claims: async () => ({ sub: account.id }) };
        },
        async renderError(ctx, out) {
          // oidc-provider has already decided what may be shown (out): render that, as ours are.
          const description = String(out.error_description ?? 'The request could not be completed.');
          renderError(ctx, views, new AgentauthError(ctx.status, String(out.error), description, { expose: true }));
        },
      });
      mountRoutes(provider, shared, new Map(detailsTypes.map((t) => [t.name, t])));
      installRefreshRotation(provider, { db, defaultRetryWindow: config.refreshRetryWindow, revokeGrant: revokeGrantNow });
      installPollInterval(provider, kv, config.approvals.pollIntervalSeconds);
      installTokenExchange(provider, { db, audit, findResourceServer: resources.find, vault });
      return provider;
    },
  };
}

function mountRoutes(provider: Provider, shared: Shared, detailsTypes: ReadonlyMap<string, DetailsType>): void {
  const { config, runtime, log, views } = shared;
  const { db, kv, audit } = runtime;
  const adminTokens = config.adminTokens;
  provider.use(withRequestContext(log));
  provider.use(measureRequests());
  provider.use(errorHandler(views));
  provider.use(securityHeaders);
  provider.use(async function refuseMalformedTarget(ctx: Context, next: Next) {
    if (pathOf(ctx) !== undefined) return next();
    // Nothing below may read ctx.path (it throws): answer here, with the headers already set.
    requestContext()?.log.warn({ method: ctx.method, targetLength: ctx.url.length }, 'malformed request-target refused');
    renderError(ctx, views, new InvalidRequest('The request target is not a valid URL.'));
  });
  provider.use(nameProviderRoute(provider));
  provider.use(refuseNulInQuery);
  provider.use(async function dependencyOutage(ctx: Context, next: Next) {
    await next();
    if (ctx.status !== 500 || !(ctx.state as { dependencyDown?: boolean }).dependencyDown) return;
    renderError(ctx, views, new TemporarilyUnavailable());
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
  // With METRICS_PORT, /metrics lives there only; otherwise here, behind the admin tokens.
  // Outside the request transaction: a scrape holds no connection while it renders.
  const metricsHere = config.metricsPort === undefined && adminTokens.length > 0;
  provider.use(metricsRoute(metricsHere ? adminTokenVerifier(adminTokens) : undefined));
  // The admin API runs each operation in its own transaction, as the CLI does.
  const admin = adminApi(runtime, adminTokens);
  provider.use(onlyUnder('/admin/', admin.routes()));
  provider.use(adminAuditRoute(db, audit, adminTokenVerifier(adminTokens), adminTokens.length > 0));
  provider.use(adminFallback(adminTokens.length > 0));
  provider.use(requestTransaction(db, views));
  provider.use(correctTokenErrors);
  provider.use(registrationGate(db, config.openRegistration, shared.limiter, { limit: config.limits.registrationPerHour, seconds: 3600 }));
  provider.use(userCodeGuessLimit(shared.limiter));
  // What every page of ours needs: the sign-in and consent pages and the account page.
  const pages = { provider, db, views, audit, forms: shared.forms, detailsTypes };
  const interactions = interactionRoutes({ ...pages, signInGuard: shared.signInGuard, hashQueue: shared.hashQueue });
  provider.use(onlyUnder('/interaction/', interactions.routes()));
  provider.use(onlyUnder('/interaction/', interactions.allowedMethods()));
  const account = accountRoutes({ ...pages, issuer: provider.issuer, vault: shared.vault, approvals: shared.approvals });
  provider.use(onlyUnder('/account', account.routes()));
  provider.use(onlyUnder('/account', account.allowedMethods()));
  auditProviderEvents(provider, audit, log, config.audit.introspectionSampleRate);
  explainClientAuthFailures(provider, { db, audit, log });
  explainDpopFailures(provider, { db, audit, log });
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    if ((ctx.state as { refreshRetry?: boolean }).refreshRetry) return; // nothing was issued
    const clientId = ctx.oidc.client?.clientId;
    if (clientId) shared.tokenLimit.issued(clientId).catch((err: unknown) => log.warn({ err }, 'token count failed'));
  });
  provider.on('server_error', (ctx: Context, err: unknown) => {
    log.error({ err }, 'oidc-provider server error');
    // oidc-provider answers every unexpected error with 500; an unreachable dependency is a 503.
    if (isDependencyError(err)) (ctx.state as { dependencyDown?: boolean }).dependencyDown = true;
  });
}
