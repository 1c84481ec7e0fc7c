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
import { startingGate } from './http/starting.ts';
import { dispatchToProvider } from './http/dispatch.ts';
import { findAccountById } from './users/store.ts';
import { ensureSigningKey } from './keys/signing-keys.ts';
import { announceConfigChange, startLiveProvider } from './oauth/live-provider.ts';
import { bumpConfigGeneration } from './storage/generation.ts';
import { buildProvider } from './oauth/provider.ts';
import { openRuntime } from './runtime.ts';
import { DataDirLockedError } from './storage/data-dir-lock.ts';
import { createAdapterClass } from './oauth/oidc-adapter.ts';
import { auditGrantRevocation } from './oauth/provider-events.ts';
import { deleteRegisteredClient, storeRegisteredClient } from './clients/dynamic-registration.ts';
import { metadataDocumentHooks } from './clients/metadata-documents.ts';
import { createRateLimiter } from './limits/rate-limit.ts';
import { tokenEndpointLimit } from './limits/token-limit.ts';
import { installRefreshRotation } from './oauth/refresh-rotation.ts';
import { startDeliveryWorker } from './revocation/delivery.ts';
import { outboxBacklog } from './revocation/outbox.ts';
import { portOf, serveMetrics } from './metrics/http.ts';
import { enableProcessMetrics, observeStorage } from './metrics/metrics.ts';
import { runMaintenance } from './maintenance/purge.ts';
import { resourceServerCache } from './resource-servers/store.ts';
import { revocationReasonFromRequest } from './oauth/revocation-reason.ts';
import { tombstoneAndNotify } from './revocation/revoke.ts';

const PURGE_INTERVAL_MS = 10 * 60 * 1000;
/** How soon committed audit rows join the hash chain. */
const AUDIT_SEAL_INTERVAL_MS = 250;

function fail(message: string): never {
  process.stderr.write(`agentauth: ${message}\n`);
  process.exit(1);
}

async function start(config: Config): Promise<void> {
  const log = createLogger(config.logLevel);
  // Listen first and answer from the first accepted connection (/healthz 200, the rest 503)
  // while storage opens, migrations run and the provider is built: a liveness probe during a
  // long migration must not kill the process, and no probe may hang.
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 });
  const gate = startingGate();
  server.on('request', gate.listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = config.issuer ?? `http://localhost:${port}`;

  const runtime = await openRuntime(config);
  const { db, kv } = runtime;
  enableProcessMetrics();
  observeStorage({ pool: () => db.poolStats(), outboxBacklog: () => outboxBacklog(db) });
  await ensureSigningKey(db, runtime.keyEncryptionKey);

  const views = createViews();
  const onGrantRevoked = auditGrantRevocation(runtime.audit);
  /** Kills a grant inside the current request and audits why (reuse, revocation): one path. */
  const revokeGrantNow = async (grantId: string) => {
    // One reason, read once from the request, for the revocation events and the audit row.
    const reason = revocationReasonFromRequest();
    const revoked = await tombstoneAndNotify(db, grantId, reason);
    if (revoked) await onGrantRevoked(revoked, reason);
  };
  const limiter = createRateLimiter(kv, log);
  const withRefreshRotation = (provider: Provider) => {
    installRefreshRotation(provider, { db, defaultRetryWindow: config.refreshRetryWindow, revokeGrant: revokeGrantNow });
    return provider;
  };
  const tokenLimit = tokenEndpointLimit(limiter, config.limits.tokenPerMinute);
  /** An RFC 7592 update or delete: every instance drops its cached clients before its next request. */
  const clientChanged = async () => {
    await bumpConfigGeneration(db);
    await db.afterCommit(() => announceConfigChange(db, kv).catch((err: unknown) => log.error({ err }, 'client change not announced')));
  };
  const Adapter = createAdapterClass(db, kv, {
    clientFound: tokenLimit.clientFound,
    revokeGrant: revokeGrantNow,
    storeClient: storeRegisteredClient(db, runtime.audit, runtime.clientPolicy, clientChanged),
    deleteClient: deleteRegisteredClient(db, runtime.audit, clientChanged),
  });
  const metadataDocuments = metadataDocumentHooks({
    db,
    audit: runtime.audit,
    policy: runtime.clientPolicy,
    limiter,
    clientFound: tokenLimit.clientFound,
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
      return withRefreshRotation(
        mountApp(
          buildProvider({
            issuer,
            adapter: Adapter,
            signingKeys,
            scopes,
            cookieKeys: runtime.cookieKeys,
            ttl: config.ttl,
            trustProxy: config.trustProxy,
            clientAuth: config.clientAuth,
            outbound: runtime.outbound,
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
            db,
            kv,
            log,
            views,
            audit: runtime.audit,
            cookieKeys: runtime.cookieKeys,
            introspectionSampleRate: config.audit.introspectionSampleRate,
            adminTokens: config.adminTokens,
            operations: runtime,
            // With METRICS_PORT, /metrics lives there only; otherwise here, behind the admin tokens.
            metricsHere: config.metricsPort === undefined,
            openRegistration: config.openRegistration,
            limiter,
            limits: config.limits,
            countIssuedToken: tokenLimit.issued,
          },
        ),
      );
    },
  });

  gate.ready(dispatchToProvider(live, log));
  const metricsServer = config.metricsPort === undefined ? undefined : await serveMetrics(config.metricsPort, config.host);

  let adminSocket: Server | undefined;
  if (config.embedded) {
    adminSocket = await serveAdminSocket(config.dataDir, runtime, log, () => live.ensureFresh());
  }

  // One instance at a time, in bounded batches (src/maintenance/purge.ts).
  const purge = setInterval(() => {
    runMaintenance({ db, log, audit: runtime.audit, tombstoneGraceSeconds: config.ttl.refreshToken, auditRetentionDays: config.audit.retentionDays }).catch(
      (err: unknown) => log.warn({ err }, 'purge failed'),
    );
  }, PURGE_INTERVAL_MS);
  purge.unref();

  let sealing = false;
  const sealer = setInterval(() => {
    if (sealing) return;
    sealing = true;
    runtime.audit
      .seal()
      .catch((err: unknown) => log.warn({ err }, 'audit seal failed'))
      .finally(() => {
        sealing = false;
      });
  }, AUDIT_SEAL_INTERVAL_MS);
  sealer.unref();

  if (config.outbound.development) {
    log.warn('ALLOW_PRIVATE_FETCH is on: agentauth may call loopback, private and link-local addresses, and http on loopback. Never use this in production.');
    process.stderr.write('\nWARNING: ALLOW_PRIVATE_FETCH=true lets agentauth call loopback, private and link-local addresses. Development only.\n');
  }
  const delivery = startDeliveryWorker({
    db,
    issuer,
    keyEncryptionKey: runtime.keyEncryptionKey,
    log,
    outbound: runtime.outbound,
    async backchannelLogout(clientId, sub) {
      const agent = (await live.current().Client.find(clientId)) as unknown as
        | { backchannelLogoutUri?: string; backchannelLogout(sub: string, sid: string): Promise<void> }
        | undefined;
      // A disabled or deleted client gets no logout token: it can no longer act at all.
      if (agent?.backchannelLogoutUri) await agent.backchannelLogout(sub, '');
    },
  });

  log.info(
    { issuer, port, metricsPort: metricsServer && portOf(metricsServer), storage: config.embedded ? 'embedded' : 'postgres', store: kv.kind },
    'listening',
  );
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
    metricsServer?.close();
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
  ${cli} clients create --name "My agent" --redirect-uri http://127.0.0.1:8080/cb --generate-key my-agent.jwk.json --scope "notes:read"

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
  if (code === 'EADDRINUSE') {
    const taken = (err as { port?: number }).port;
    fail(taken !== undefined && taken === config.metricsPort ? `METRICS_PORT ${taken} is already in use` : `port ${config.port} is already in use (set PORT)`);
  }
  if (code === 'ECONNREFUSED') fail(`cannot connect to ${config.databaseUrl ? 'PostgreSQL or Redis' : 'Redis'}: ${(err as Error).message}`);
  process.stderr.write(`agentauth: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
