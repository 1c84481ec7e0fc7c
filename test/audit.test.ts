/**
 * The audit trail: every event after its action with the right actor, agent and user; nothing
 * recorded for work that rolled back; tampering named by `audit verify`; purge keeps the chain
 * verifiable; the admin export endpoint.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import pg from 'pg';
import type { AuditRow } from '../src/audit/store.ts';
import { authorize, csrfOf, openLoginPage, postForm } from './helpers/browserless.ts';
import { openDirect } from './helpers/direct-db.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';

/** The export's row shape (a type only: the test still talks to the real server). */
type Row = AuditRow & { summary: string };

async function exportEvents(server: TestServer, ...filter: string[]): Promise<Row[]> {
  const r = await server.cli(['audit', 'export', ...filter, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { events: Row[] }).events;
}

async function verify(
  server: TestServer,
): Promise<{ code: number; result: { ok: boolean; checked: number; problem?: { row?: number; seal?: number; reason: string } } }> {
  const r = await server.cli(['audit', 'verify', '--json']);
  return { code: r.code, result: JSON.parse(r.stdout) };
}

const REDIRECT_URI = 'http://127.0.0.1/cb';

describe('audit events', () => {
  let server: TestServer;
  let user: TestUser;
  let agent: TestAgent;
  let config: client.Configuration;

  before(async () => {
    server = await startServer();
    await createScope(server, 'files:read', 'Read your files');
    await createScope(server, 'files:write', 'Change your files');
    user = await createUser(server);
    agent = await createAgent(server, {
      redirectUris: [REDIRECT_URI],
      scope: 'files:read files:write',
      grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
    });
    config = await clientFor(server, agent);
  });
  after(() => server?.stop());

  async function flow(untick: string[] = [], decision: 'allow' | 'deny' = 'allow') {
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'files:read files:write',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback } = await authorize(server.issuer, url, user, { untick, decision });
    return { callback, verifier, url };
  }

  const expectOne = (rows: Row[], type: string, check: Partial<Row> = {}): Row => {
    const found = rows.filter((r) => r.event_type === type && Object.entries(check).every(([k, v]) => JSON.stringify(r[k as keyof Row]) === JSON.stringify(v)));
    assert.ok(found.length >= 1, `no ${type} event matching ${JSON.stringify(check)} in ${JSON.stringify(rows.map((r) => r.event_type))}`);
    return found.at(-1)!;
  };

  it('names the user and the agent beside their ids, as the agent was called at the time (issue 20)', async () => {
    const named = await createAgent(server, { name: 'Reporting Agent', grantTypes: ['client_credentials'], scope: 'files:read' });
    const cc = await clientFor(server, named);
    await client.clientCredentialsGrant(cc, { scope: 'files:read' });
    assert.equal((await server.cli(['clients', 'update', named.clientId, '--name', 'Reporting Agent v2'])).code, 0);
    await client.clientCredentialsGrant(cc, { scope: 'files:read' });
    const issued = (await exportEvents(server, '--client', named.clientId)).filter((r) => r.event_type === 'token.issued');
    assert.deepEqual(
      issued.map((r) => r.client_name),
      ['Reporting Agent', 'Reporting Agent v2'],
      'a rename does not rewrite history',
    );
    assert.equal(issued[0]!.summary, 'Reporting Agent: token.issued');

    const { callback, verifier } = await flow();
    await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
    const rows = await exportEvents(server, '--user', user.username);
    const byUser = expectOne(rows, 'token.issued', { account_id: user.id, client_id: agent.clientId });
    assert.equal(byUser.account_name, user.username);
    assert.equal(byUser.client_name, 'Test agent');
    assert.equal(byUser.summary, `${user.username} via Test agent: token.issued`);
    const created = expectOne(await exportEvents(server), 'user.created', { account_id: user.id });
    assert.equal(created.summary, `admin cli: user.created (${user.username})`);
  });

  it('records admin acts: scopes, users, clients, key rotation', async () => {
    const all = await exportEvents(server);
    expectOne(all, 'scope.created', { actor_type: 'admin', scopes: 'files:read' });
    expectOne(all, 'user.created', { actor_type: 'admin', account_id: user.id });
    const registered = expectOne(all, 'client.registered', { actor_type: 'admin', client_id: agent.clientId });
    assert.deepEqual(registered.details.redirect_uris, [REDIRECT_URI]);
    const r = await server.cli(['keys', 'rotate', '--json']);
    const { kid } = JSON.parse(r.stdout) as { kid: string };
    const rotated = expectOne(await exportEvents(server), 'signing_key.rotated', { actor_type: 'admin' });
    assert.equal(rotated.details.kid, kid);
  });

  it('issue-14: a failed sign-in under an unknown name records a keyed hash of it, never the typed text', async () => {
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'files:read',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const login = await openLoginPage(server.issuer, url);
    const typed = `my-Pa55word-typed-in-the-name-field-${Date.now()}`;
    await postForm(login.jar, `${server.issuer}/interaction/${login.uid}/login`, { csrf: csrfOf(login.html), username: typed, password: 'x' });
    const rows = await exportEvents(server, '--client', agent.clientId);
    assert.ok(!JSON.stringify(rows).includes(typed), 'the typed name is not stored');
    const failed = rows.filter((r) => r.event_type === 'login.failed' && r.account_id === null).at(-1);
    assert.match(String(failed?.details.username_hash), /^[A-Za-z0-9_-]{43}$/);
  });

  it('records failed and successful logins, consent, code and tokens with the right actor, agent and user', async () => {
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'files:read files:write',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const login = await openLoginPage(server.issuer, url);
    await postForm(login.jar, `${server.issuer}/interaction/${login.uid}/login`, {
      csrf: csrfOf(login.html),
      username: user.username,
      password: 'not-the-password',
    });
    const { callback } = await authorize(server.issuer, url, user, { untick: ['files:write'] }, login.jar);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });

    const rows = await exportEvents(server, '--client', agent.clientId);
    const failed = expectOne(rows, 'login.failed', { actor_type: 'user', outcome: 'failure', client_id: agent.clientId });
    assert.equal(failed.details.account, user.id);
    assert.equal(failed.account_id, user.id);
    assert.ok(failed.ip && failed.request_id, 'ip and request id recorded');
    expectOne(rows, 'login.succeeded', { actor_type: 'user', actor_id: user.id, account_id: user.id, client_id: agent.clientId });
    const consent = expectOne(rows, 'consent.granted', { actor_type: 'user', actor_id: user.id, account_id: user.id, client_id: agent.clientId });
    assert.deepEqual(consent.details, { granted: ['files:read'], refused: ['files:write'] });
    assert.equal(consent.scopes, 'files:read');
    assert.ok(consent.grant_id);
    expectOne(rows, 'authorization_code.issued', {
      actor_type: 'user',
      account_id: user.id,
      client_id: agent.clientId,
      grant_id: consent.grant_id,
      scopes: 'files:read',
    });
    const issued = expectOne(rows, 'token.issued', {
      actor_type: 'client',
      actor_id: agent.clientId,
      account_id: user.id,
      grant_id: consent.grant_id,
      scopes: 'files:read',
    });
    assert.equal(issued.details.grant_type, 'authorization_code');
    assert.match(String(issued.details.access_token_sha256), /^[0-9a-f]{64}$/);
    assert.notEqual(issued.details.access_token_sha256, tokens.access_token);
  });

  it('records rotation, then reuse detection and the grant revocation it causes', async () => {
    const { callback, verifier } = await flow();
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
    const second = await client.refreshTokenGrant(config, tokens.refresh_token!);
    await client.refreshTokenGrant(config, second.refresh_token!);
    // Two rotations old: not a retry, reuse.
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!));
    const rows = await exportEvents(server, '--user', user.username);
    expectOne(rows, 'refresh_token.rotated', { actor_type: 'client', actor_id: agent.clientId, account_id: user.id });
    const reuse = expectOne(rows, 'refresh_token.reuse_detected', {
      actor_type: 'client',
      actor_id: agent.clientId,
      client_id: agent.clientId,
      account_id: user.id,
      outcome: 'failure',
    });
    assert.ok(
      rows.some((r) => r.event_type === 'refresh_token.rotated' && r.details.previous_sha256 === reuse.details.token_sha256),
      'the reused token is the one rotated first',
    );
    assert.ok(reuse.ip);
    const revoked = expectOne(rows, 'grant.revoked', { grant_id: reuse.grant_id, account_id: user.id, client_id: agent.clientId });
    assert.equal(revoked.details.reason, 'refresh_token_reuse');
    assert.ok(revoked.id > reuse.id);
  });

  it('records code reuse, revocation, introspection, client credentials and a denied consent', async () => {
    const first = await flow();
    await client.authorizationCodeGrant(config, first.callback, { pkceCodeVerifier: first.verifier });
    await assert.rejects(client.authorizationCodeGrant(config, first.callback, { pkceCodeVerifier: first.verifier }));
    const second = await flow();
    const tokens = await client.authorizationCodeGrant(config, second.callback, { pkceCodeVerifier: second.verifier });
    await client.tokenIntrospection(config, tokens.access_token);
    await client.tokenRevocation(config, tokens.refresh_token!);
    await client.clientCredentialsGrant(config, { scope: 'files:read' });
    await flow([], 'deny');

    const rows = await exportEvents(server, '--client', agent.clientId);
    const codeReuse = expectOne(rows, 'authorization_code.reuse_detected', { actor_id: agent.clientId, account_id: user.id, outcome: 'failure' });
    expectOne(rows, 'grant.revoked', { grant_id: codeReuse.grant_id, details: { reason: 'authorization_code_reuse' } });
    const introspected = expectOne(rows, 'token.introspected', { actor_id: agent.clientId, client_id: agent.clientId, account_id: user.id });
    assert.equal(introspected.details.active, true);
    const revoked = expectOne(rows, 'token.revoked', { actor_id: agent.clientId, account_id: user.id });
    assert.equal(revoked.details.token_type, 'RefreshToken');
    expectOne(rows, 'grant.revoked', { grant_id: revoked.grant_id, details: { reason: 'token_revoked' } });
    const cc = expectOne(rows, 'token.issued', { actor_id: agent.clientId, account_id: null, scopes: 'files:read' });
    assert.equal(cc.details.grant_type, 'client_credentials');
    expectOne(rows, 'consent.denied', { actor_type: 'user', account_id: user.id });
  });

  it('exports by time, user and client, as JSON lines without --json', async () => {
    const since = new Date(Date.now() - 60_000).toISOString();
    const r = await server.cli(['audit', 'export', '--since', since, '--client', agent.clientId]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Row);
    assert.ok(lines.length > 10);
    assert.ok(lines.every((l) => l.client_id === agent.clientId));
    const none = await exportEvents(server, '--since', new Date(Date.now() + 3_600_000).toISOString());
    assert.equal(none.length, 0);
    const bad = await server.cli(['audit', 'export', '--since', 'yesterday']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /since/);
  });

  it('verifies the whole chain', async () => {
    const { code, result } = await verify(server);
    assert.equal(code, 0);
    assert.equal(result.ok, true);
    assert.ok(result.checked > 20);
  });
});

describe('audit: nothing recorded for work that rolled back', {
  skip: REAL_SERVICES ? false : 'holds a table lock from a second PostgreSQL connection (set DATABASE_URL)',
}, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('a token request whose transaction fails after its writes began leaves no row and no token', async (t) => {
    await createScope(server, 'x:read', 'X');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'x:read' });
    const config = await clientFor(server, agent);
    const locker = new pg.Client({ connectionString: server.env.DATABASE_URL });
    await locker.connect();
    t.after(() => locker.end());
    const count = async (sql: string, params: unknown[] = []) => (await locker.query(sql, params)).rows[0].n as number;
    const tokenCount = () => count("SELECT count(*)::int AS n FROM oidc_artifacts WHERE model = 'ClientCredentials'");
    const tokensBefore = await tokenCount();
    let answer: { status: number; body: string; requestId: string } | undefined;
    config[client.customFetch] = async (url, options) => {
      const res = await fetch(url, options as RequestInit);
      answer = { status: res.status, body: await res.clone().text(), requestId: res.headers.get('x-request-id') ?? '' };
      return res;
    };
    // Hold the audit table so the request's last write (its audit row) times out: everything
    // the request wrote before it must roll back with it.
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    try {
      await assert.rejects(client.clientCredentialsGrant(config, { scope: 'x:read' }));
    } finally {
      await locker.query('ROLLBACK');
    }
    assert.equal(answer?.status, 503);
    assert.equal((JSON.parse(answer.body) as { error: string }).error, 'temporarily_unavailable');
    assert.equal(await tokenCount(), tokensBefore, 'no token was stored');
    assert.equal(
      await count('SELECT count(*)::int AS n FROM audit_events WHERE request_id = $1', [answer.requestId]),
      0,
      'no audit row for the failed request',
    );
    // The next request goes through, and the chain is intact.
    config[client.customFetch] = (url, options) => fetch(url, options as RequestInit);
    assert.ok((await client.clientCredentialsGrant(config, { scope: 'x:read' })).access_token);
    assert.equal((await verify(server)).result.ok, true);
  });
});

describe('audit tamper evidence and retention', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
    for (let i = 0; i < 6; i++) await createScope(server, `scope${i}:read`, `Scope ${i}`);
  });
  after(() => server?.stop());

  it('refuses UPDATE and DELETE on audit rows and seals', async () => {
    assert.equal((await verify(server)).result.ok, true); // seals everything so far
    if (!REAL_SERVICES) await server.halt();
    const db = await openDirect(server);
    try {
      await assert.rejects(db.query("UPDATE audit_events SET outcome = 'failure' WHERE id = 1"), /append-only/);
      await assert.rejects(db.query('DELETE FROM audit_events WHERE id = 1'), /append-only/);
      await assert.rejects(db.query("UPDATE audit_seals SET hash = 'x' WHERE seq = 1"), /append-only/);
    } finally {
      await db.close();
    }
  });

  it('names a changed row, a deleted row and a changed seal', async () => {
    if (!REAL_SERVICES) await server.halt();
    assert.equal((await verify(server)).result.ok, true);
    const tamper = async (...statements: string[]) => {
      const db = await openDirect(server);
      try {
        await db.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only');
        await db.query('ALTER TABLE audit_seals DISABLE TRIGGER audit_seals_append_only');
        for (const sql of statements) await db.query(sql);
        await db.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only');
        await db.query('ALTER TABLE audit_seals ENABLE TRIGGER audit_seals_append_only');
      } finally {
        await db.close();
      }
    };

    await tamper(`UPDATE audit_events SET details = '{"description":"forged"}' WHERE id = 3`);
    let v = await verify(server);
    assert.equal(v.code, 1);
    assert.equal(v.result.problem?.row, 3);
    assert.match(v.result.problem?.reason ?? '', /row 3 was changed/);
    const human = await server.cli(['audit', 'verify']);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /does not verify: row 3 was changed/);

    await tamper(
      `UPDATE audit_events SET details = '{"description":"Scope 2","allow_unverified":false}' WHERE id = 3`,
      'DELETE FROM audit_events WHERE id = 5',
    );
    v = await verify(server);
    assert.equal(v.code, 1);
    assert.equal(v.result.problem?.row, 5);
    assert.match(v.result.problem?.reason ?? '', /row 5 is missing/);

    await tamper(`UPDATE audit_seals SET sealed_at = sealed_at + interval '1 second' WHERE seq = 1`);
    v = await verify(server);
    assert.equal(v.code, 1);
    assert.equal(v.result.problem?.seal, 1);
    assert.match(v.result.problem?.reason ?? '', /seal 1 was changed/);
  });
});

describe('audit purge', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('purges old events and leaves a trail that still verifies', async () => {
    await createScope(server, 'old:one', 'Old one');
    await createScope(server, 'old:two', 'Old two');
    assert.equal((await verify(server)).result.ok, true); // sealed now
    await new Promise((resolve) => setTimeout(resolve, 20));
    const cutoff = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await createScope(server, 'new:one', 'New one');
    const r = await server.cli(['audit', 'purge', '--before', cutoff, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const purged = JSON.parse(r.stdout) as { purged: number; throughSeq: number };
    assert.equal(purged.purged, 2);
    const rows = await exportEvents(server);
    assert.deepEqual(
      rows.map((row) => row.event_type),
      ['scope.created', 'audit.purged'],
    );
    assert.equal(rows[1]!.details.through_seq, purged.throughSeq);
    const v = await verify(server);
    assert.equal(v.result.ok, true, JSON.stringify(v.result));
    assert.equal((await server.cli(['audit', 'purge', '--before', cutoff, '--json'])).stdout.trim(), '{"purged":0}');
  });
});

describe('audit: a verification while a purge commits', () => {
  const ADMIN_TOKEN = randomBytes(24).toString('base64url');
  let server: TestServer;
  before(async () => {
    server = await startServer({ ADMIN_TOKEN });
  });
  after(() => server?.stop());

  const admin = (path: string, body?: unknown) =>
    fetch(`${server.baseUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  it('sees the chain before the purge or after it, never half of each', async () => {
    // Many small seals, so one verification takes many statements.
    for (let i = 0; i < 80; i++) {
      assert.equal((await admin('/admin/scopes', { name: `purge:s${i}`, description: 'A row to purge' })).status, 200);
      assert.equal((await admin('/admin/audit/verify')).status, 200);
    }
    const before = new Date().toISOString();
    const verifications = Array.from({ length: 4 }, async () => (await (await admin('/admin/audit/verify')).json()) as { ok: boolean; problem?: unknown });
    const purge = admin('/admin/audit/purge', { before });
    const results = await Promise.all(verifications);
    assert.equal((await purge).status, 200);
    for (const result of results) assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(((await (await admin('/admin/audit/verify')).json()) as { ok: boolean }).ok, true);
  });
});

describe('admin audit endpoint', () => {
  let server: TestServer;
  const adminToken = randomBytes(32).toString('base64url');
  before(async () => {
    server = await startServer({ ADMIN_TOKEN: adminToken });
    await createScope(server, 'admin:test', 'Admin test');
  });
  after(() => server?.stop());

  it('serves JSON lines behind the admin token', async () => {
    assert.equal((await fetch(`${server.issuer}/admin/audit`)).status, 401);
    assert.equal((await fetch(`${server.issuer}/admin/audit`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    const res = await fetch(`${server.issuer}/admin/audit`, { headers: { authorization: `Bearer ${adminToken}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /ndjson/);
    const rows = (await res.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Row);
    assert.ok(rows.some((row) => row.event_type === 'scope.created'));
    const bad = await fetch(`${server.issuer}/admin/audit?since=notatime`, { headers: { authorization: `Bearer ${adminToken}` } });
    assert.equal(bad.status, 400);
  });

  it('does not exist without ADMIN_TOKEN', async () => {
    const other = await startServer();
    try {
      assert.equal((await fetch(`${other.issuer}/admin/audit`, { headers: { accept: 'application/json' } })).status, 404);
    } finally {
      await other.stop();
    }
  });
});
