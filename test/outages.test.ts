/**
 * PostgreSQL or Redis going away (SECURITY-TESTS F-01, F-04, INV-7): requests that need the lost
 * dependency answer 503 temporarily_unavailable with Retry-After, never a 500 or a token that was
 * not stored; /readyz says which one is down; everything works again once it is back.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import pg from 'pg';
import { clientFor, createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';

const skip = REAL_SERVICES ? false : 'cuts the connections to PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)';

describe('dependency outages', { skip }, () => {
  let server: TestServer;
  let pgProxy: TcpProxy;
  let redisProxy: TcpProxy;
  let agent: TestAgent;
  let config: client.Configuration;

  before(async () => {
    const database = new URL(process.env.DATABASE_URL!);
    const redis = new URL(process.env.REDIS_URL!);
    pgProxy = await startTcpProxy(database.hostname, Number(database.port || 5432));
    redisProxy = await startTcpProxy(redis.hostname, Number(redis.port || 6379));
    // The server reaches PostgreSQL and Redis only through the proxies; the CLI goes direct.
    server = await startServer({}, (env) => {
      const proxied = new URL(env.DATABASE_URL!);
      proxied.host = `127.0.0.1:${pgProxy.port}`;
      return { ...env, DATABASE_URL: proxied.toString(), REDIS_URL: `redis://127.0.0.1:${redisProxy.port}` };
    });
    await createScope(server, 'outage:test', 'Outage test');
    agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'outage:test' });
    config = await clientFor(server, agent);
  });
  after(async () => {
    await server?.stop();
    await pgProxy?.close();
    await redisProxy?.close();
  });

  const expectUnavailable = async (res: Response, label: string) => {
    assert.equal(res.status, 503, `${label}: ${res.status}`);
    assert.equal(res.headers.get('retry-after'), '1', label);
    const text = await res.text();
    assert.doesNotMatch(text, /at [\w.<>]+ \(|node:internal/, `${label}: no stack`);
    return text;
  };

  it('PostgreSQL down: token requests get 503 and no token; readyz says so; back when it is', async () => {
    assert.ok((await client.clientCredentialsGrant(config, { scope: 'outage:test' })).access_token);
    pgProxy.cut();
    try {
      let answer: Response | undefined;
      config[client.customFetch] = async (url, options) => {
        answer = await fetch(url, options as RequestInit);
        return answer.clone();
      };
      await assert.rejects(client.clientCredentialsGrant(config, { scope: 'outage:test' }));
      const body = JSON.parse(await expectUnavailable(answer!, 'token')) as { error: string };
      assert.equal(body.error, 'temporarily_unavailable');
      const ready = await fetch(`${server.baseUrl}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(await ready.json(), { status: 'unavailable', database: false, store: true });
      assert.equal((await fetch(`${server.baseUrl}/healthz`)).status, 200, 'alive all the same');
    } finally {
      pgProxy.restore();
      config[client.customFetch] = (url, options) => fetch(url, options as RequestInit);
    }
    let recovered: string | undefined;
    for (let i = 0; i < 50 && !recovered; i++) {
      recovered = await client.clientCredentialsGrant(config, { scope: 'outage:test' }).then(
        (t) => t.access_token,
        () => undefined,
      );
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(recovered, 'tokens again once PostgreSQL is back');
  });

  it('Redis down: sign-in pages get 503 (not 500); tokens for agents keep working', async () => {
    redisProxy.cut();
    try {
      const params = new URLSearchParams({
        client_id: 'agentauth-account',
        response_type: 'code',
        scope: 'openid',
        redirect_uri: `${server.issuer}/account/callback`,
        code_challenge: 'a'.repeat(43),
        code_challenge_method: 'S256',
      });
      const page = await fetch(`${server.baseUrl}/auth?${params}`, { redirect: 'manual', headers: { accept: 'text/html' } });
      const html = await expectUnavailable(page, 'authorization page');
      assert.match(html, /temporarily unavailable/);
      const ready = await fetch(`${server.baseUrl}/readyz`);
      assert.deepEqual(await ready.json(), { status: 'unavailable', database: true, store: false });
      // Credentials live in PostgreSQL; replay protection too: agents are not locked out.
      assert.ok((await client.clientCredentialsGrant(config, { scope: 'outage:test' })).access_token);
    } finally {
      redisProxy.restore();
    }
  });
});

/**
 * A rolling upgrade: a newer instance's migration alters a table while this one holds prepared
 * statements that read it (src/storage/db.ts prepares the statements it repeats). The connection
 * whose plan went stale answers one request with 503 and is dropped; the next one prepares the
 * statement afresh. Without that, every request the stale connection takes would fail.
 */
describe('a prepared statement whose table a newer instance altered', { skip }, () => {
  const ADMIN_TOKEN = randomBytes(24).toString('base64url');
  let server: TestServer;
  before(async () => {
    // A pool of 4, so a burst queues for connections: one given back mid-burst goes to a waiting
    // request, whichever connection it is.
    server = await startServer({ ADMIN_TOKENS: `ops:${ADMIN_TOKEN}`, DATABASE_POOL_SIZE: '4' });
  });
  after(() => server?.stop());

  /** What a newer instance's migration might do to a table this one reads with `SELECT *`. */
  const alterEvents = async (target: TestServer) => {
    const db = new pg.Client({ connectionString: target.env.DATABASE_URL });
    await db.connect();
    try {
      await db.query('ALTER TABLE revocation_events ADD COLUMN added_by_a_newer_instance text');
    } finally {
      await db.end();
    }
  };
  const listEvents = (target: TestServer = server) => fetch(`${target.baseUrl}/admin/events`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });

  it('costs exactly one request a 503, never a 500, and the rest are answered', async () => {
    // One request prepares `SELECT * FROM revocation_events …` on one connection.
    assert.equal((await listEvents()).status, 200);
    await alterEvents(server);
    // A burst of many times the pool's size takes every pooled connection and queues for more,
    // so the one holding the stale plan answers one of them even if a background task held it
    // when the burst began. That one request fails (503) and its connection is dropped: kept, it
    // would fail again every time it came back. None failing would mean nothing was prepared.
    const responses = await Promise.all(Array.from({ length: 30 }, () => listEvents()));
    const statuses = responses.map((res) => res.status);
    for (const res of responses) {
      const text = await res.text();
      if (res.status === 503) {
        assert.equal(res.headers.get('retry-after'), '1');
        assert.doesNotMatch(text, /at [\w.<>]+ \(|node:internal|cached plan/, 'no stack, no driver message');
      }
    }
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [503],
      `statuses: ${statuses}`,
    );
    assert.equal((await listEvents()).status, 200);
  });

  it('with DATABASE_PREPARED_STATEMENTS=false (a pooler that cannot keep them) prepares none', async () => {
    const unprepared = await startServer({ ADMIN_TOKENS: `ops:${ADMIN_TOKEN}`, DATABASE_PREPARED_STATEMENTS: 'false' });
    try {
      assert.equal((await listEvents(unprepared)).status, 200);
      await alterEvents(unprepared);
      const statuses = await Promise.all(Array.from({ length: 30 }, async () => (await listEvents(unprepared)).status));
      assert.deepEqual(new Set(statuses), new Set([200]), `statuses: ${statuses}`);
    } finally {
      await unprepared.stop();
    }
  });
});
