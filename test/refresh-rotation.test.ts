/**
 * Refresh token rotation (SECURITY-TESTS F-06..F-09, F-12, R-15, R-16, R-21..R-29): the retry rule
 * gives the immediate predecessor the same successor, never a fork; any other reuse revokes the
 * grant; strict clients (window 0) get strict behaviour; concurrency, revocation races and
 * lifetimes hold.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import pg from 'pg';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';
const isInvalidGrant = (err: client.ResponseBodyError) => err.error === 'invalid_grant';

const grantTokens = (server: TestServer, config: client.Configuration, user: TestUser) =>
  codeFlowTokens(server.issuer, config, user, { scope: 'files:read', redirectUri: REDIRECT_URI });

async function auditTypes(server: TestServer, clientId: string): Promise<string[]> {
  const events = JSON.parse((await server.cli(['audit', 'export', '--client', clientId, '--json'])).stdout).events as { event_type: string }[];
  return events.map((e) => e.event_type);
}

describe('refresh token rotation', () => {
  let server: TestServer;
  let user: TestUser;

  before(async () => {
    server = await startServer();
    await createScope(server, 'files:read', 'Read your files');
    user = await createUser(server);
  });
  after(() => server?.stop());

  const agentWith = async (refreshRetryWindow?: number) => {
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'files:read', refreshRetryWindow });
    return { agent, config: await clientFor(server, agent) };
  };

  it('gives the immediate predecessor the same successor within the window, then treats older tokens as reuse', async () => {
    const { agent, config } = await agentWith();
    const first = await grantTokens(server, config, user);
    const a = await client.refreshTokenGrant(config, first.refresh_token!);
    const retried = await client.refreshTokenGrant(config, first.refresh_token!);
    assert.equal(retried.refresh_token, a.refresh_token, 'same successor refresh token');
    assert.equal(retried.access_token, a.access_token, 'same access token: nothing new was minted');
    assert.ok((retried.expires_in ?? 0) > 0);
    const b = await client.refreshTokenGrant(config, a.refresh_token!);
    // first is no longer the immediate predecessor of a live token: reuse.
    await assert.rejects(client.refreshTokenGrant(config, first.refresh_token!), isInvalidGrant);
    await assert.rejects(client.refreshTokenGrant(config, b.refresh_token!), isInvalidGrant);
    assert.equal((await client.tokenIntrospection(config, b.access_token)).active, false);
    const types = await auditTypes(server, agent.clientId);
    assert.ok(types.includes('refresh_token.retried'));
    assert.ok(types.includes('refresh_token.reuse_detected'));
    assert.equal(types.filter((t) => t === 'refresh_token.rotated').length, 2, 'the retry minted nothing');
  });

  it('is strict for a client whose window is 0', async () => {
    const { config } = await agentWith(0);
    const first = await grantTokens(server, config, user);
    const a = await client.refreshTokenGrant(config, first.refresh_token!);
    await assert.rejects(client.refreshTokenGrant(config, first.refresh_token!), isInvalidGrant);
    await assert.rejects(client.refreshTokenGrant(config, a.refresh_token!), isInvalidGrant);
  });

  it('F-06 strict: of 10 simultaneous refreshes at most one succeeds, and then the family is dead', async () => {
    const { config } = await agentWith(0);
    const first = await grantTokens(server, config, user);
    const attempts = await Promise.allSettled(Array.from({ length: 10 }, () => client.refreshTokenGrant(config, first.refresh_token!)));
    const wins = attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
    assert.ok(wins.length <= 1, `${wins.length} succeeded`);
    for (const a of attempts) if (a.status === 'rejected') assert.equal((a.reason as client.ResponseBodyError).error, 'invalid_grant', String(a.reason));
    for (const w of wins) await assert.rejects(client.refreshTokenGrant(config, w.refresh_token!), isInvalidGrant);
  });

  it('F-09: a retry after the window is reuse', async () => {
    const { config } = await agentWith(1);
    const first = await grantTokens(server, config, user);
    const a = await client.refreshTokenGrant(config, first.refresh_token!);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    await assert.rejects(client.refreshTokenGrant(config, first.refresh_token!), isInvalidGrant);
    await assert.rejects(client.refreshTokenGrant(config, a.refresh_token!), isInvalidGrant);
  });

  it('F-12: a revocation racing with refreshes leaves no live token of the grant', async () => {
    const { config } = await agentWith();
    for (let round = 0; round < 5; round++) {
      const first = await grantTokens(server, config, user);
      const seen: client.TokenEndpointResponse[] = [first];
      const refreshes = Array.from({ length: 10 }, () =>
        client.refreshTokenGrant(config, first.refresh_token!).then(
          (t) => {
            seen.push(t);
          },
          () => undefined,
        ),
      );
      const revocation = client.tokenRevocation(config, first.refresh_token!).catch(() => undefined);
      await Promise.all([...refreshes, revocation]);
      for (const t of seen) {
        assert.equal((await client.tokenIntrospection(config, t.access_token)).active, false, `round ${round}: an access token survived`);
        await assert.rejects(client.refreshTokenGrant(config, t.refresh_token!), isInvalidGrant);
      }
    }
  });

  it("R-28: a disabled user's agents can no longer refresh", async () => {
    const { config } = await agentWith();
    const someone = await createUser(server);
    const tokens = await grantTokens(server, config, someone);
    assert.equal((await server.cli(['users', 'disable', someone.username])).code, 0);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), isInvalidGrant);
  });

  it('issue-13: disabling a user revokes every grant of theirs, so their access tokens die at once', async () => {
    const first = await agentWith();
    const second = await agentWith();
    const someone = await createUser(server);
    const tokens = [await grantTokens(server, first.config, someone), await grantTokens(server, second.config, someone)];
    const r = await server.cli(['users', 'disable', someone.username, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { revoked_grants: number }).revoked_grants, 2);
    for (const [i, { config, agent }] of [first, second].entries()) {
      assert.equal((await client.tokenIntrospection(config, tokens[i]!.access_token)).active, false, 'access token');
      const events = JSON.parse((await server.cli(['audit', 'export', '--client', agent.clientId, '--json'])).stdout).events as {
        event_type: string;
        actor_type: string;
        details: { reason?: string };
      }[];
      assert.ok(
        events.some((e) => e.event_type === 'grant.revoked' && e.actor_type === 'admin' && e.details.reason === 'user_disabled'),
        JSON.stringify(events),
      );
    }
  });

  it('issue-13: a grant killed by refresh token reuse queues its revocation event with reason refresh_token_reuse', async () => {
    const { agent, config } = await agentWith(0);
    assert.equal((await server.cli(['clients', 'update', agent.clientId, '--event-uri', 'https://agent.example/events'])).code, 0);
    const tokens = await grantTokens(server, config, user);
    await client.refreshTokenGrant(config, tokens.refresh_token!);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), isInvalidGrant);
    const events = JSON.parse((await server.cli(['events', 'list', '--json'])).stdout).events as { client_id: string; reason: string }[];
    assert.deepEqual(
      events.filter((e) => e.client_id === agent.clientId).map((e) => e.reason),
      ['refresh_token_reuse'],
    );
  });

  it('issue-13: revoking an access token (RFC 7009 §2.1) revokes its whole grant, as documented', async () => {
    const { agent, config } = await agentWith();
    const tokens = await grantTokens(server, config, user);
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!);
    await client.tokenRevocation(config, refreshed.access_token);
    for (const t of [refreshed.access_token, tokens.access_token]) assert.equal((await client.tokenIntrospection(config, t)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token!), isInvalidGrant);
    const events = JSON.parse((await server.cli(['audit', 'export', '--client', agent.clientId, '--json'])).stdout).events as {
      event_type: string;
      details: { reason?: string };
    }[];
    assert.ok(events.some((e) => e.event_type === 'grant.revoked' && e.details.reason === 'token_revoked'));
    const types = events.map((e) => e.event_type);
    assert.ok(!types.includes('refresh_token.reuse_detected'), 'not mistaken for reuse');
  });

  it('R-21: a refresh token works only for the client it was issued to', async () => {
    const { config } = await agentWith();
    const other = await agentWith();
    const tokens = await grantTokens(server, config, user);
    await assert.rejects(client.refreshTokenGrant(other.config, tokens.refresh_token!), isInvalidGrant);
    assert.ok((await client.refreshTokenGrant(config, tokens.refresh_token!)).access_token, 'the failed attempt did not spend it');
  });

  it('R-29: stores neither refresh tokens nor the retry response in readable form', {
    skip: REAL_SERVICES ? false : 'reads the database over a second connection',
  }, async () => {
    const { config } = await agentWith();
    const first = await grantTokens(server, config, user);
    const a = await client.refreshTokenGrant(config, first.refresh_token!);
    const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
    await db.connect();
    try {
      for (const value of [first.refresh_token!, a.refresh_token!, a.access_token]) {
        const r = await db.query('SELECT count(*)::int AS n FROM oidc_artifacts t WHERE t::text LIKE $1', [`%${value}%`]);
        assert.equal(r.rows[0].n, 0);
      }
    } finally {
      await db.end();
    }
  });
});

describe('refresh chain lifetimes', () => {
  let server: TestServer;
  let user: TestUser;
  before(async () => {
    server = await startServer({ REFRESH_TOKEN_TTL: '4', REFRESH_ABSOLUTE_LIFETIME: '8' });
    await createScope(server, 'files:read', 'Read your files');
    user = await createUser(server);
  });
  after(() => server?.stop());

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('expires a refresh token left unused for the idle timeout', async () => {
    const config = await clientFor(server, await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'files:read' }));
    const tokens = await grantTokens(server, config, user);
    await sleep(4_600);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), isInvalidGrant);
  });

  it('R-27: ends the chain at its absolute lifetime however often it is used', async () => {
    const config = await clientFor(server, await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'files:read' }));
    let current: client.TokenEndpointResponse = await grantTokens(server, config, user);
    // The grant was created before this moment, so it ends before start + 8 s.
    const start = Date.now();
    // Used every 1.5 s, well inside the 4 s idle timeout, for 5 s...
    while (Date.now() - start < 5_000) {
      await sleep(1_500);
      current = await client.refreshTokenGrant(config, current.refresh_token!);
    }
    // ...then once more after the chain's 8 s, less than 4 s after the last use.
    await sleep(Math.max(0, start + 8_500 - Date.now()));
    await assert.rejects(client.refreshTokenGrant(config, current.refresh_token!), isInvalidGrant);
  });
});
