/**
 * GET /metrics: runs real flows (client credentials, code flows with refresh, a retry, a reuse, a
 * revocation, a rate-limit refusal, a revocation event delivered after one failure), scrapes
 * the Prometheus text exposition, parses it and checks the exact counts the flows produced;
 * the bearer guard on the main port; METRICS_PORT serving without a credential (and the main port
 * then having no /metrics); and that no label value carries a token, a user id or a client id.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import pg from 'pg';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { freePort, newDeployment, REAL_SERVICES, spawnServer, startServer, type TestServer } from './helpers/server.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';
import { createTestHost, testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';
import { waitFor } from './helpers/wait.ts';

const ADMIN_TOKEN = 'metrics-test-admin-token-0123456789abcdef';
const REDIRECT_URI = 'http://127.0.0.1/cb';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
}

const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
const unescapeLabel = (v: string) => v.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const m = LABEL.exec(text);
    if (!m) throw new Error(`bad label set: {${text}}`);
    labels[m[1]!] = unescapeLabel(m[2]!);
  }
  return labels;
}

/** A sample value as Prometheus reads it (Go's ParseFloat: Inf and NaN in any case; prom-client writes `Nan`). */
function parseValue(text: string): number {
  if (/^\+?inf$/i.test(text)) return Infinity;
  if (/^-inf$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  const value = Number(text);
  if (Number.isNaN(value) || text === '') throw new Error(`bad sample value: ${text}`);
  return value;
}

/** The Prometheus text format (0.0.4): every line is a comment, blank, or a well-formed sample. */
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (type) types.set(type[1]!, type[2]!);
      else assert.match(line, /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* /, `comment line: ${line}`);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    samples.push({ name: m[1]!, labels: m[2] ? parseLabels(m[2]) : {}, value: parseValue(m[3]!) });
  }
  return { samples, types };
}

/** The value of the one sample with exactly these labels; undefined when there is none. */
function sampleOf(exposition: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels);
  const found = exposition.samples.filter(
    (s) => s.name === name && Object.keys(s.labels).length === wanted.length && wanted.every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value;
}

/** Sum over every series of a metric. */
const sumOf = (exposition: Exposition, name: string) => exposition.samples.filter((s) => s.name === name).reduce((n, s) => n + s.value, 0);

async function scrape(url: string, token: string | undefined = ADMIN_TOKEN): Promise<Exposition> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  assert.equal(res.status, 200, await res.clone().text());
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

/** A token request's outcome, for counting what the server should have counted. */
async function settle<T>(request: Promise<T>): Promise<'ok' | 'limited'> {
  try {
    await request;
    return 'ok';
  } catch (err) {
    if (err instanceof client.ResponseBodyError && err.status === 429) return 'limited';
    throw err;
  }
}

describe('metrics on the main port, behind ADMIN_TOKEN', () => {
  let server: TestServer;
  let user: TestUser;

  before(async () => {
    server = await startServer({ ADMIN_TOKEN });
    await createScope(server, 'files:read', 'Read your files');
    await createScope(server, 'reports:generate', 'Generate reports');
    user = await createUser(server);
  });
  after(() => server?.stop());

  it('refuses a missing or wrong bearer with 401, an RFC 6750 challenge and a JSON error', async () => {
    const missing = await fetch(`${server.issuer}/metrics`);
    assert.equal(missing.status, 401);
    assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="agentauth-metrics"');
    assert.equal(((await missing.json()) as { error: string }).error, 'invalid_token');

    for (const authorization of [`Bearer ${ADMIN_TOKEN}x`, 'Bearer short', `bearer ${ADMIN_TOKEN.slice(1)}`]) {
      const wrong = await fetch(`${server.issuer}/metrics`, { headers: { authorization, accept: 'text/html' } });
      assert.equal(wrong.status, 401, authorization);
      assert.equal(wrong.headers.get('www-authenticate'), 'Bearer realm="agentauth-metrics", error="invalid_token"');
      assert.match(wrong.headers.get('content-type') ?? '', /^application\/json/);
      const body = (await wrong.json()) as { error: string; error_description: string };
      assert.equal(body.error, 'invalid_token');
      assert.equal(typeof body.error_description, 'string');
    }
    const basic = await fetch(`${server.issuer}/metrics`, { headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } });
    assert.equal(basic.status, 401);
    assert.equal(basic.headers.get('www-authenticate'), 'Bearer realm="agentauth-metrics"');
    // The scheme is case-insensitive (RFC 7235 §2.1).
    assert.equal((await fetch(`${server.issuer}/metrics`, { headers: { authorization: `bearer ${ADMIN_TOKEN}` } })).status, 200);
  });

  it('counts exactly what the flows did, by grant type, reason, limit and endpoint', async () => {
    const secrets: string[] = [user.id];
    const before = await scrape(`${server.issuer}/metrics`);
    const tokenRequests = (outcome: string, e: Exposition) => sampleOf(e, 'agentauth_http_requests_total', { endpoint: 'token', outcome }) ?? 0;

    // Client credentials: two tokens, one of them revoked at /revocation (no grant: no grant revocation).
    const bot = await createAgent(server, { name: 'Report bot', grantTypes: ['client_credentials'], scope: 'reports:generate' });
    const botConfig = await clientFor(server, bot);
    const cc1 = await client.clientCredentialsGrant(botConfig, { scope: 'reports:generate' });
    const cc2 = await client.clientCredentialsGrant(botConfig, { scope: 'reports:generate' });
    await client.tokenRevocation(botConfig, cc1.access_token);
    secrets.push(bot.clientId, cc1.access_token, cc2.access_token);

    // A code flow, one refresh, a retry of the same refresh (served again, nothing minted), then
    // the refresh token revoked at /revocation: the grant dies with reason token_revoked.
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'files:read' });
    const config = await clientFor(server, agent);
    const first = await codeFlowTokens(server.issuer, config, user, { scope: 'files:read', redirectUri: REDIRECT_URI });
    const rotated = await client.refreshTokenGrant(config, first.refresh_token!);
    const retried = await client.refreshTokenGrant(config, first.refresh_token!);
    assert.equal(retried.refresh_token, rotated.refresh_token);
    await client.tokenRevocation(config, rotated.refresh_token!, { token_type_hint: 'refresh_token' });
    secrets.push(agent.clientId, first.access_token, first.refresh_token!, rotated.access_token, rotated.refresh_token!);

    // A strict agent (no retry window): one refresh, then the first token again is reuse.
    const strict = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'files:read', refreshRetryWindow: 0 });
    const strictConfig = await clientFor(server, strict);
    const strictFirst = await codeFlowTokens(server.issuer, strictConfig, user, { scope: 'files:read', redirectUri: REDIRECT_URI });
    const strictNext = await client.refreshTokenGrant(strictConfig, strictFirst.refresh_token!);
    await assert.rejects(client.refreshTokenGrant(strictConfig, strictFirst.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    secrets.push(strict.clientId, strictFirst.access_token, strictFirst.refresh_token!, strictNext.access_token, strictNext.refresh_token!);

    // A client limited to one token a minute. A minute boundary may fall between the requests,
    // so the expected counts are what the server answered, not a fixed split.
    const limited = await createAgent(server, { name: 'Limited bot', grantTypes: ['client_credentials'], scope: 'reports:generate' });
    assert.equal((await server.cli(['clients', 'update', limited.clientId, '--rate-limit', '1', '--json'])).code, 0);
    const limitedConfig = await clientFor(server, limited);
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) outcomes.push(await settle(client.clientCredentialsGrant(limitedConfig, { scope: 'reports:generate' })));
    const limitedOk = outcomes.filter((o) => o === 'ok').length;
    const refused = outcomes.filter((o) => o === 'limited').length;
    assert.ok(refused >= 1, `outcomes: ${outcomes.join(', ')}`);
    secrets.push(limited.clientId);

    const m = await scrape(`${server.issuer}/metrics`);
    const delta = (name: string, labels: Record<string, string> = {}) => (sampleOf(m, name, labels) ?? 0) - (sampleOf(before, name, labels) ?? 0);
    assert.equal(delta('agentauth_tokens_issued_total', { grant_type: 'client_credentials' }), 2 + limitedOk);
    assert.equal(delta('agentauth_tokens_issued_total', { grant_type: 'authorization_code' }), 2);
    assert.equal(delta('agentauth_tokens_issued_total', { grant_type: 'refresh_token' }), 2, 'the retry issued nothing');
    assert.equal(delta('agentauth_refresh_token_rotations_total'), 2);
    assert.equal(delta('agentauth_refresh_token_retries_total'), 1);
    assert.equal(delta('agentauth_reuse_detections_total', { artifact: 'refresh_token' }), 1);
    assert.equal(delta('agentauth_reuse_detections_total', { artifact: 'authorization_code' }), 0);
    assert.equal(delta('agentauth_grant_revocations_total', { reason: 'token_revoked' }), 1);
    assert.equal(delta('agentauth_grant_revocations_total', { reason: 'refresh_token_reuse' }), 1);
    assert.equal(sumOf(m, 'agentauth_grant_revocations_total') - sumOf(before, 'agentauth_grant_revocations_total'), 2);
    assert.equal(delta('agentauth_rate_limit_refusals_total', { limit: 'token' }), refused);
    assert.equal(delta('agentauth_rate_limit_refusals_total', { limit: 'login_failure' }), 0);

    // Token endpoint requests: cc 2, code 2, refresh 2, retry 1, limited ones; refused: reuse and 429s.
    assert.equal(tokenRequests('2xx', m) - tokenRequests('2xx', before), 2 + 2 + 2 + 1 + limitedOk);
    assert.equal(tokenRequests('4xx', m) - tokenRequests('4xx', before), 1 + refused);
    assert.equal(sampleOf(m, 'agentauth_http_request_duration_seconds_count', { endpoint: 'token', outcome: '2xx' }), tokenRequests('2xx', m));
    assert.equal(delta('agentauth_http_requests_total', { endpoint: 'revocation', outcome: '2xx' }), 2);
    // Our own pages are named by route: one sign-in and one consent per code flow.
    assert.equal(delta('agentauth_http_requests_total', { endpoint: 'interaction_login', outcome: '3xx' }), 2);
    assert.equal(delta('agentauth_http_requests_total', { endpoint: 'interaction_consent', outcome: '3xx' }), 2);

    // Nothing was queued (no subscriber), the pool is there, no storage error happened.
    assert.equal(sampleOf(m, 'agentauth_revocation_outbox_pending_events'), 0);
    assert.equal(sampleOf(m, 'agentauth_revocation_outbox_oldest_pending_seconds'), 0);
    const connections = sampleOf(m, 'agentauth_postgres_pool_connections');
    if (REAL_SERVICES) assert.ok(connections !== undefined && connections >= 1 && connections <= 10, `pool connections: ${connections}`);
    else assert.equal(connections, 1, 'PGlite: its one connection');
    assert.equal(sampleOf(m, 'agentauth_postgres_pool_waiting_requests'), 0);
    for (const kind of ['connection', 'timeout', 'query']) {
      assert.equal(delta('agentauth_postgres_errors_total', { kind }), 0, kind);
      assert.equal(delta('agentauth_redis_errors_total', { kind }), 0, kind);
    }
    // prom-client's process metrics ride along.
    assert.equal(m.types.get('process_cpu_user_seconds_total'), 'counter');
    assert.ok((sampleOf(m, 'process_resident_memory_bytes') ?? 0) > 0);
    assert.equal(m.types.get('agentauth_http_request_duration_seconds'), 'histogram');

    // Labels are closed sets: no token, user id or client id, and no raw path.
    for (const sample of m.samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        for (const secret of secrets) assert.ok(!value.includes(secret), `${sample.name}{${label}} carries a token or id`);
        assert.doesNotMatch(value, /\//, `${sample.name}{${label}="${value}"} looks like a path`);
      }
      if (sample.labels.endpoint !== undefined) assert.match(sample.labels.endpoint, /^[a-z0-9_]+$/);
    }
  });

  it('names unknown paths `other`, so scanners add no series', async () => {
    const before = await scrape(`${server.issuer}/metrics`);
    for (const path of ['/nothing-here', '/wp-login.php', `/${user.id}`]) assert.equal((await fetch(`${server.issuer}${path}`)).status, 404);
    const m = await scrape(`${server.issuer}/metrics`);
    const other = (e: Exposition) => sampleOf(e, 'agentauth_http_requests_total', { endpoint: 'other', outcome: '4xx' }) ?? 0;
    assert.equal(other(m) - other(before), 3);
    const known = new Set([...before.samples.map((s) => s.labels.endpoint), 'other']);
    for (const s of m.samples) assert.ok(known.has(s.labels.endpoint), `new endpoint label ${s.labels.endpoint}`);
  });
});

describe('metrics on METRICS_PORT', () => {
  let server: TestServer;
  let metricsUrl: string;
  let receiver: { url: string; attempts: number; close(): Promise<void> } | undefined;

  before(async () => {
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    server = await startServer({ ADMIN_TOKEN, METRICS_PORT: String(port), ...(testHostsUnavailable ? {} : testHostEnv()) });
  });
  after(async () => {
    await receiver?.close();
    await server?.stop();
  });

  it('serves /metrics there without a credential, and the main port then has no /metrics', async () => {
    const before = await scrape(metricsUrl, undefined);
    assert.equal((await fetch(`${server.issuer}/healthz`)).status, 200);
    const m = await scrape(metricsUrl, undefined);
    const healthz = (e: Exposition) => sampleOf(e, 'agentauth_http_requests_total', { endpoint: 'healthz', outcome: '2xx' }) ?? 0;
    assert.equal(healthz(m) - healthz(before), 1);
    // Even with the right admin token: /metrics exists on METRICS_PORT only.
    const main = await fetch(`${server.issuer}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(main.status, 404);
    // The metrics listener serves nothing else.
    assert.equal((await fetch(metricsUrl.replace('/metrics', '/healthz'))).status, 404);
    assert.equal((await fetch(metricsUrl, { method: 'POST' })).status, 404);
  });

  it('counts a revocation event delivered to an agent after one failed attempt', { skip: testHostsUnavailable }, async () => {
    const state = { attempts: 0 };
    const host = await createTestHost('metrics-events', (req, res) => {
      req.resume();
      req.on('end', () => {
        state.attempts += 1;
        res.writeHead(state.attempts === 1 ? 503 : 202).end();
      });
    });
    receiver = {
      url: `${host.origin}/events`,
      get attempts() {
        return state.attempts;
      },
      close: () => host.close(),
    };
    await createScope(server, 'inbox:read', 'Read your inbox');
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'inbox:read' });
    assert.equal((await server.cli(['clients', 'update', agent.clientId, '--event-uri', receiver.url])).code, 0);
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'inbox:read', redirectUri: REDIRECT_URI });
    await client.tokenRevocation(config, tokens.refresh_token!, { token_type_hint: 'refresh_token' });

    const m = await waitFor('the event to be delivered', async () => {
      const e = await scrape(metricsUrl, undefined);
      return sampleOf(e, 'agentauth_revocation_deliveries_total', { subscriber: 'client' }) === 1 ? e : undefined;
    });
    assert.equal(receiver.attempts, 2);
    assert.equal(sampleOf(m, 'agentauth_revocation_delivery_failures_total', { subscriber: 'client' }), 1);
    assert.equal(sampleOf(m, 'agentauth_revocation_delivery_failures_total', { subscriber: 'resource_server' }), 0);
    assert.equal(sampleOf(m, 'agentauth_revocation_deliveries_total', { subscriber: 'resource_server' }), 0);
    assert.equal(sampleOf(m, 'agentauth_revocation_outbox_pending_events'), 0);
    assert.equal(sampleOf(m, 'agentauth_grant_revocations_total', { reason: 'token_revoked' }), 1);
  });
});

describe('metrics during outages', { skip: REAL_SERVICES ? false : 'cuts the connections to PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)' }, () => {
  let server: TestServer;
  let pgProxy: TcpProxy;
  let redisProxy: TcpProxy;
  let metricsUrl: string;

  before(async () => {
    const database = new URL(process.env.DATABASE_URL!);
    const redis = new URL(process.env.REDIS_URL!);
    pgProxy = await startTcpProxy(database.hostname, Number(database.port || 5432));
    redisProxy = await startTcpProxy(redis.hostname, Number(redis.port || 6379));
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    // The server reaches PostgreSQL and Redis only through the proxies; the CLI goes direct.
    server = await startServer({ METRICS_PORT: String(port) }, (env) => {
      const proxied = new URL(env.DATABASE_URL!);
      proxied.host = `127.0.0.1:${pgProxy.port}`;
      return { ...env, DATABASE_URL: proxied.toString(), REDIS_URL: `redis://127.0.0.1:${redisProxy.port}` };
    });
    await createScope(server, 'outage:test', 'Outage test');
  });
  after(async () => {
    await server?.stop();
    await pgProxy?.close();
    await redisProxy?.close();
  });

  it('still answers a scrape while PostgreSQL is down, counts its errors and the 503s, and no token', async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'outage:test' });
    const config = await clientFor(server, agent);
    await client.clientCredentialsGrant(config, { scope: 'outage:test' });
    const before = await scrape(metricsUrl, undefined);
    pgProxy.cut();
    try {
      // Refused (a 503: counted as 5xx below).
      await assert.rejects(client.clientCredentialsGrant(config, { scope: 'outage:test' }));
      const m = await scrape(metricsUrl, undefined);
      const delta = (name: string, labels: Record<string, string>) => (sampleOf(m, name, labels) ?? 0) - (sampleOf(before, name, labels) ?? 0);
      assert.equal(delta('agentauth_tokens_issued_total', { grant_type: 'client_credentials' }), 0);
      assert.equal(delta('agentauth_http_requests_total', { endpoint: 'token', outcome: '5xx' }), 1);
      assert.ok(delta('agentauth_postgres_errors_total', { kind: 'connection' }) > 0, 'connection errors counted');
      assert.equal(delta('agentauth_postgres_errors_total', { kind: 'query' }), 0);
      // The backlog gauge keeps its last reading rather than failing the scrape.
      assert.equal(sampleOf(m, 'agentauth_revocation_outbox_pending_events'), 0);
    } finally {
      pgProxy.restore();
    }
  });

  it('counts Redis errors while Redis is down', async () => {
    const before = await scrape(metricsUrl, undefined);
    redisProxy.cut();
    try {
      // Readiness pings Redis: the failed ping is counted.
      assert.equal((await fetch(`${server.baseUrl}/readyz`)).status, 503);
      const m = await scrape(metricsUrl, undefined);
      const errors = (e: Exposition) => sumOf(e, 'agentauth_redis_errors_total');
      assert.ok(errors(m) > errors(before), 'Redis errors counted');
    } finally {
      redisProxy.restore();
    }
  });
});

/** An admin API call on `server` (JSON body when given). */
const adminCall = (server: TestServer, path: string, init: { method?: string; body?: unknown } = {}) =>
  fetch(`${server.baseUrl}${path}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });

describe('DATABASE_POOL_SIZE', { skip: REAL_SERVICES ? false : 'sizes the PostgreSQL pool (set DATABASE_URL and REDIS_URL)' }, () => {
  it('opens as many PostgreSQL connections as it says under a burst that wants more, and answers every request', async () => {
    const server = await startServer({ ADMIN_TOKEN, DATABASE_POOL_SIZE: '4' });
    const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
    // Its own connection: inside the locking transaction, pg_stat_activity would keep its first reading.
    const observer = new pg.Client({ connectionString: server.env.DATABASE_URL });
    await Promise.all([db.connect(), observer.connect()]);
    try {
      // Every request of the burst reads revocation_events; locked here, each one holds its
      // connection in PostgreSQL until the lock goes, so the pool fills and the rest wait.
      const lockHolder = (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await db.query('BEGIN');
      await db.query('LOCK TABLE revocation_events IN ACCESS EXCLUSIVE MODE');
      const burst = Promise.all(Array.from({ length: 40 }, async () => (await adminCall(server, '/admin/events')).status));
      const serverConnections = async () =>
        (
          await observer.query<{ open: number; blocked: number }>(
            `SELECT count(*)::int AS open, (count(*) FILTER (WHERE wait_event_type = 'Lock'))::int AS blocked
             FROM pg_stat_activity WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), $1)`,
            [lockHolder],
          )
        ).rows[0]!;
      await waitFor('the pool to fill', async () => ((await serverConnections()).blocked >= 4 ? true : undefined));
      // Four open, all four waiting on the lock: the default pool would have opened ten.
      assert.deepEqual(await serverConnections(), { open: 4, blocked: 4 });
      await db.query('COMMIT');
      assert.deepEqual(new Set(await burst), new Set([200]));
    } finally {
      await Promise.all([db.end(), observer.end()]);
      await server.stop();
    }
  });

  it('serves concurrent audit reads on a pool of 4: no sealer holds a connection while it waits for another', async () => {
    const server = await startServer({ ADMIN_TOKEN, DATABASE_POOL_SIZE: '4' });
    try {
      // Each first page seals what is pending first. A sealer that took a second connection while
      // holding the seal lock found the other three held by readers queued on that lock: all
      // waited until the 5 s connection timeout, and the sealer's reader got a 503.
      const statuses = await Promise.all(Array.from({ length: 12 }, async () => (await adminCall(server, '/admin/audit')).status));
      assert.deepEqual(new Set(statuses), new Set([200]), `statuses: ${statuses}`);
      // A verification runs in an operation's transaction and seals first, batch after batch.
      for (let i = 0; i < 20; i++) {
        const body = { name: `pool:s${randomUUID().slice(0, 8)}`, description: 'An audit row to seal' };
        assert.equal((await adminCall(server, '/admin/scopes', { method: 'POST', body })).status, 200);
      }
      const verified = await Promise.all(
        Array.from({ length: 12 }, async () => {
          const res = await adminCall(server, '/admin/audit/verify', { method: 'POST' });
          return res.status === 200 ? ((await res.json()) as { ok: boolean }).ok : res.status;
        }),
      );
      assert.deepEqual(new Set(verified), new Set([true]), `verifications: ${verified}`);
    } finally {
      await server.stop();
    }
  });
});

describe('metrics configuration', () => {
  it('has no /metrics without ADMIN_TOKEN or METRICS_PORT', async () => {
    const server = await startServer();
    try {
      assert.equal((await fetch(`${server.issuer}/metrics`)).status, 404);
      assert.equal((await fetch(`${server.issuer}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status, 404);
    } finally {
      await server.stop();
    }
  });

  it('stops with one line naming METRICS_PORT when it is not a port or is the main port', async () => {
    const deployment = await newDeployment();
    try {
      for (const [value, port] of [
        ['metrics', '3000'],
        ['70000', '3000'],
        ['3000', '3000'],
      ] as const) {
        const error = await spawnServer({ ...deployment.env, METRICS_PORT: value, PORT: port }).then(
          () => assert.fail('the server started'),
          (err: Error) => err.message,
        );
        assert.match(error, /invalid configuration: .*METRICS_PORT/);
        assert.match(error, /exited with 1/);
      }
    } finally {
      await deployment.cleanup();
    }
  });
});
