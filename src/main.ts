/**
 * Starts the server: configuration, storage, signing keys, the provider, then listen.
 * Stops gracefully on SIGINT/SIGTERM.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:net';
import type Provider from 'oidc-provider';
import { serveAdminSocket } from './cli/admin-socket.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { mountApp } from './http/app.ts';
import { createLogger } from './http/logger.ts';
import { createViews } from './http/views.ts';
import { renderErrorPage } from './http/errors.ts';
import { findAccountById } from './accounts/store.ts';
import { ensureSigningKey } from './keys/signing-keys.ts';
import { startLiveProvider } from './oauth/live-provider.ts';
import { buildProvider } from './oauth/provider.ts';
import { openRuntime } from './runtime.ts';
import { DataDirLockedError } from './storage/data-dir-lock.ts';
import { createAdapterClass } from './storage/oidc-adapter.ts';
import { auditGrantRevocation } from './audit/provider-events.ts';
import { deleteRegisteredClient, storeRegisteredClient } from './clients/dynamic-registration.ts';
import { metadataDocumentHooks } from './clients/metadata-documents.ts';
import { createRateLimiter } from './limits/rate-limit.ts';
import { tokenEndpointLimit } from './limits/token-limit.ts';
import { installRefreshRotation } from './oauth/refresh-rotation.ts';
import { startDeliveryWorker } from './revocation/delivery.ts';
import { runMaintenance } from './maintenance/purge.ts';
import { resourceServerCache } from './resources/store.ts';
import { tombstoneGrant } from './grants/store.ts';

const PURGE_INTERVAL_MS = 10 * 60 * 1000;
/** How soon committed audit rows join the hash chain. */
const AUDIT_SEAL_INTERVAL_MS = 250;

function fail(message: string): never {
  process.stderr.write(`agentauth: ${message}\n`);
  process.exit(1);
}

async function start(config: Config): Promise<void> {
  const log = createLogger(config.logLevel);
  const runtime = await openRuntime(config);
  const { db, kv } = runtime;
  await ensureSigningKey(db, runtime.keyEncryptionKey);

  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = config.issuer ?? `http://localhost:${port}`;

  const views = createViews();
  const onGrantRevoked = auditGrantRevocation(runtime.audit);
  /** Kills a grant inside the current request and audits why (reuse, revocation): one path. */
  const revokeGrantNow = async (grantId: string) => {
    const revoked = await tombstoneGrant(db, grantId);
    if (revoked) await onGrantRevoked(revoked);
  };
  const limiter = createRateLimiter(kv, log);
  const withRefreshRotation = (provider: Provider) => {
    installRefreshRotation(provider, { db, defaultRetryWindow: config.refreshRetryWindow, revokeGrant: revokeGrantNow });
    return provider;
  };
  const tokenLimit = tokenEndpointLimit(limiter, config.limits.tokenPerMinute);
  const Adapter = createAdapterClass(db, kv, {
    clientFound: tokenLimit.clientFound,
    revokeGrant: revokeGrantNow,
    storeClient: storeRegisteredClient(db, runtime.audit, runtime.clientPolicy),
    deleteClient: deleteRegisteredClient(db, runtime.audit),
  });
  const metadataDocuments = metadataDocumentHooks({
    db, audit: runtime.audit, policy: runtime.clientPolicy, limiter, clientFound: tokenLimit.clientFound,
    fetchesPerIp: { limit: config.limits.registrationPerHour, seconds: 3600 },
  });
  const live = await startLiveProvider({
    db,
    kv,
    log,
    kek: runtime.keyEncryptionKey,
    pollIntervalSeconds: config.configPollIntervalSeconds,
    build: (signingKeys, scopes) => {
      const resources = resourceServerCache(db);
      return withRefreshRotation(mountApp(
        buildProvider({
          issuer,
          adapter: Adapter,
          signingKeys,
          scopes,
          cookieKeys: runtime.cookieKeys,
          ttl: config.ttl,
          trustProxy: config.trustProxy,
          clientAuth: config.clientAuth,
          allowPrivateFetch: config.allowPrivateFetch,
          findResourceServer: resources.find,
          introspectsFor: resources.introspectsFor,
          metadataDocuments: config.clientIdMetadataDocuments ? metadataDocuments : undefined,
          withoutConnection: db.withoutConnection,
          async findAccount(_ctx, id) {
            const account = await findAccountById(db, id);
            if (!account || account.disabled) return undefined;
            return { accountId: account.id, claims: async () => ({ sub: account.id }) };
          },
          async renderError(ctx, out) {
            renderErrorPage(ctx, views, ctx.status, String(out.error), String(out.error_description ?? 'The request could not be completed.'));
          },
        }),
        {
          db, kv, log, views, audit: runtime.audit, cookieKeys: runtime.cookieKeys,
          introspectionSampleRate: config.audit.introspectionSampleRate,
          adminToken: config.adminToken,
          openRegistration: config.openRegistration,
          limiter,
          limits: config.limits,
          countIssuedToken: tokenLimit.issued,
          ensureFresh: () => live.ensureFresh(),
        },
      ));
    },
  });

  const handlers = new WeakMap<Provider, ReturnType<Provider['callback']>>();
  server.on('request', (req, res) => {
    const provider = live.current();
    let handler = handlers.get(provider);
    if (!handler) {
      handler = provider.callback();
      handlers.set(provider, handler);
    }
    handler(req, res);
  });

  let adminSocket: Server | undefined;
  if (config.embedded) {
    adminSocket = await serveAdminSocket(config.dataDir, runtime, log, () => live.ensureFresh());
  }

  // One instance at a time, in bounded batches (src/maintenance/purge.ts).
  const purge = setInterval(() => {
    runMaintenance({ db, log, audit: runtime.audit, tombstoneGraceSeconds: config.ttl.refreshToken, auditRetentionDays: config.audit.retentionDays })
      .catch((err: unknown) => log.warn({ err }, 'purge failed'));
  }, PURGE_INTERVAL_MS);
  purge.unref();

  let sealing = false;
  const sealer = setInterval(() => {
    if (sealing) return;
    sealing = true;
    runtime.audit.seal()
      .catch((err: unknown) => log.warn({ err }, 'audit seal failed'))
      .finally(() => { sealing = false; });
  }, AUDIT_SEAL_INTERVAL_MS);
  sealer.unref();

  if (config.allowPrivateFetch) {
    log.warn('ALLOW_PRIVATE_FETCH is on: jwks_uri may point at loopback and private addresses. Never use this in production.');
    process.stderr.write('\nWARNING: ALLOW_PRIVATE_FETCH=true lets agentauth fetch from loopback and private addresses. Development and tests only.\n');
  }
  const delivery = startDeliveryWorker({
    db, issuer, keyEncryptionKey: runtime.keyEncryptionKey, log, allowPrivateFetch: config.allowPrivateFetch,
    async backchannelLogout(clientId, sub) {
      const agent = (await live.current().Client.find(clientId)) as unknown as
        { backchannelLogoutUri?: string; backchannelLogout(sub: string, sid: string): Promise<void> } | undefined;
      // A disabled or deleted client gets no logout token: it can no longer act at all.
      if (agent?.backchannelLogoutUri) await agent.backchannelLogout(sub, '');
    },
  });

  log.info({ issuer, port, storage: config.embedded ? 'embedded' : 'postgres', store: kv.kind }, 'listening');
  process.stderr.write(banner(issuer, config));

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    clearInterval(purge);
    clearInterval(sealer);
    delivery.stop();
    live.close();
    adminSocket?.close();
    server.close();
    server.closeIdleConnections();
    const force = setTimeout(() => server.closeAllConnections(), 5_000);
    force.unref();
    await new Promise((resolve) => server.once('close', resolve));
    await runtime.audit.seal().catch(() => {});
    await runtime.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

function banner(issuer: string, config: Config): string {
  const cli = 'npx agentauth';
  return `
agentauth is running at ${issuer}
  storage: ${config.embedded ? `embedded (${config.dataDir})` : 'PostgreSQL'}; sessions: ${config.redisUrl ? 'Redis' : 'in-process'}
  metadata: ${issuer}/.well-known/oauth-authorization-server
  users manage their agents at ${issuer}/account

Next steps (in another terminal):
  ${cli} scopes create notes:read --description "Read your notes"
  printf '%s' 'a long password' | ${cli} users create alice --password-stdin
  ${cli} clients create --name "My agent" --redirect-uri http://127.0.0.1:8080/cb --jwks-file agent-jwks.json --scope "notes:read"

`;
}

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) fail(err.message);
  throw err;
}
start(config).catch((err: unknown) => {
  if (err instanceof DataDirLockedError) fail(err.message);
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') fail(`port ${config.port} is already in use (set PORT)`);
  if (code === 'ECONNREFUSED') fail(`cannot connect to ${config.databaseUrl ? 'PostgreSQL or Redis' : 'Redis'}: ${(err as Error).message}`);
  process.stderr.write(`agentauth: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
