/**
 * Starts the server: listen, open storage, compose the app (src/app.ts), then serve it; stops
 * gracefully on SIGINT/SIGTERM.
 */
import http from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import { buildApp } from './app.ts';
import { serveAdminSocket } from './operations/admin-socket.ts';
import { loadConfig, type Config } from './config.ts';
import { AgentauthError, operatorLine } from './errors.ts';
import { dispatchToProvider } from './http/dispatch.ts';
import { createLogger } from './http/logger.ts';
import { startingGate } from './http/starting.ts';
import { ensureSigningKey } from './keys/signing-keys.ts';
import { startSchedule } from './maintenance/schedule.ts';
import { portOf, serveMetrics } from './metrics/http.ts';
import { enableProcessMetrics, observeStorage } from './metrics/metrics.ts';
import { ASYNC_CONTEXT_FRAME, onAsyncContextFrame } from './node-flags.ts';
import { startLiveProvider } from './oauth/live-provider.ts';
import { startDeliveryWorker } from './revocation/delivery.ts';
import { outboxBacklog } from './revocation/outbox.ts';
import { openRuntime } from './runtime.ts';

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

  const app = buildApp({ config, runtime, log, issuer });
  const live = await startLiveProvider({
    db,
    kv,
    log,
    kek: runtime.keyEncryptionKey,
    pollIntervalSeconds: config.configPollIntervalSeconds,
    build: app.buildProvider,
  });
  gate.ready(dispatchToProvider(live, log));

  const metricsServer = config.metricsPort === undefined ? undefined : await serveMetrics(config.metricsPort, config.host);
  let adminSocket: Server | undefined;
  if (config.embedded) adminSocket = await serveAdminSocket(config.dataDir, runtime, log, () => live.ensureFresh());
  const schedule = startSchedule({
    db,
    log,
    audit: runtime.audit,
    tombstoneGraceSeconds: config.ttl.refreshToken,
    auditRetentionDays: config.audit.retentionDays,
  });
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
  app.useDelivery(delivery);

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
    schedule.stop();
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

/** On Node 22 without the flag the Dockerfile gives (src/node-flags.ts), a line saying what it costs. */
function runtimeHint(): string {
  if (onAsyncContextFrame()) return '';
  return `\n  runtime: Node ${process.versions.node}; \`node ${ASYNC_CONTEXT_FRAME} bin/start.js\` (as the Dockerfile runs it) needs ~10 % less CPU per request`;
}

function banner(issuer: string, config: Config): string {
  const cli = 'npx agentauth';
  return `
agentauth is running at ${issuer}
  storage: ${config.embedded ? `embedded (${config.dataDir})` : 'PostgreSQL'}; sessions: ${config.redisUrl ? 'Redis' : 'in-process'}${runtimeHint()}
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
  if (err instanceof AgentauthError && err.expose) fail(operatorLine(err));
  throw err;
}
start(config).catch((err: unknown) => {
  if (err instanceof AgentauthError && err.expose) fail(operatorLine(err));
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') {
    const taken = (err as { port?: number }).port;
    fail(taken !== undefined && taken === config.metricsPort ? `METRICS_PORT ${taken} is already in use` : `port ${config.port} is already in use (set PORT)`);
  }
  if (code === 'ECONNREFUSED') fail(`cannot connect to ${config.databaseUrl ? 'PostgreSQL or Redis' : 'Redis'}: ${(err as Error).message}`);
  process.stderr.write(`agentauth: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
