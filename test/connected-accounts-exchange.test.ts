/**
 * Agents obtain upstream tokens by token exchange (RFC 8693, `resource` naming the connection):
 * the upstream access token and its lifetime, never the refresh token; only for an agent the
 * connection allows, with its own token of a user who connected; a stale token refreshed once
 * however many ask at once, rotation kept; an upstream refusal marks the connection broken; the
 * agent's grant revoked, its access to every connection stops.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, codeFlowTokens, signInToAccount } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { REAL_SERVICES, spawnServer, startServer, stopProcess, type TestServer } from './helpers/server.ts';
import { testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';
import { startUpstream, type Upstream } from './helpers/upstream-provider.ts';
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, tokenExchange } from './helpers/token-exchange.ts';

const DRIVE = 'urn:agentauth:connection:drive';
const REDIRECT_URI = 'http://127.0.0.1/cb';

const exchange = (config: client.Configuration, subjectToken: string, resource = DRIVE) =>
  tokenExchange(config, { subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, resource });

type Deployment = Pick<TestServer, 'issuer' | 'cli'>;

/** A user who connected Drive at the deployment's /account (the upstream issuing tokens of `ttl` seconds). */
async function connectedUser(server: Deployment, upstream: Upstream, ttl: number): Promise<TestUser> {
  upstream.setAccessTokenTtl(ttl);
  const user = await createUser(server);
  const { jar } = await signInToAccount(server, user);
  const start = await browse(jar, `${server.issuer}/account/connections/drive/connect`);
  const done = await browse(jar, await upstream.approve(start.headers.get('location')!, user.username));
  assert.equal(done.headers.get('location'), '/account?done=connected');
  return user;
}

const agentFor = (server: Deployment, name: string) =>
  createAgent(server, { name, redirectUris: [REDIRECT_URI], scope: 'notes:read', grantTypes: ['authorization_code', 'refresh_token', TOKEN_EXCHANGE] });

const userTokenAt = async (server: Deployment, config: client.Configuration, user: TestUser) =>
  (await codeFlowTokens(server.issuer, config, user, { scope: 'notes:read', redirectUri: REDIRECT_URI })).access_token;

/** A Drive connection allowing `agent`. */
async function registerDrive(server: Deployment, upstream: Upstream, agent: TestAgent): Promise<void> {
  const made = await server.cli(
    ['connections', 'create', 'drive', '--name', 'Drive', '--issuer', upstream.host.origin, '--client-id', upstream.clientId, '--client-secret-stdin'].concat([
      '--scope',
      'openid offline_access drive.read',
      '--agent',
      agent.clientId,
    ]),
    upstream.secret,
  );
  assert.equal(made.code, 0, made.stderr);
}

describe('upstream tokens by token exchange', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let upstream: Upstream;
  let agent: TestAgent;
  let agentConfig: client.Configuration;
  let stranger: TestAgent;

  let restarted: Awaited<ReturnType<typeof spawnServer>> | undefined;
  const connected = (ttl: number) => connectedUser(server, upstream, ttl);
  const userToken = (config: client.Configuration, user: TestUser) => userTokenAt(server, config, user);

  before(async () => {
    server = await startServer(testHostEnv());
    upstream = await startUpstream([`${server.issuer}/account/connections/callback`]);
    await createScope(server, 'notes:read', 'Read your notes');
    agent = await agentFor(server, 'Reporting Agent');
    agentConfig = await clientFor(server, agent);
    stranger = await agentFor(server, 'Stranger Agent');
    await registerDrive(server, upstream, agent);
  });

  after(async () => {
    if (restarted) await stopProcess(restarted.child);
    await server?.stop();
    await upstream?.close();
  });

  it('hands the agent the upstream access token and its lifetime, never the refresh token', async () => {
    const user = await connected(3600);
    const answer = await exchange(agentConfig, await userToken(agentConfig, user));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.ok(upstream.issued.includes(String(answer.body.access_token)), 'the access token the upstream issued');
    assert.equal(answer.body.issued_token_type, ACCESS_TOKEN_TYPE);
    assert.equal(String(answer.body.token_type).toLowerCase(), 'bearer', 'the upstream token type (openid-client lowercases it)');
    assert.equal(answer.body.refresh_token, undefined);
    assert.ok(Number(answer.body.expires_in) > 3500 && Number(answer.body.expires_in) <= 3600, String(answer.body.expires_in));
    assert.equal(answer.body.scope, 'openid drive.read', 'the scopes the upstream granted (it drops offline_access without prompt=consent)');
    const page = await (await browse((await signInToAccount(server, user)).jar, `${server.issuer}/account`)).text();
    assert.match(page, /by Reporting Agent/, 'the page says which agent used it');
  });

  it('refuses an agent the connection does not allow, a user who never connected, and a token that is not the agent’s own', async () => {
    const user = await connected(3600);
    const strangerConfig = await clientFor(server, stranger);
    const refused = await exchange(strangerConfig, await userToken(strangerConfig, user));
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, 'unauthorized_client');

    const absent = await createUser(server);
    const notConnected = await exchange(agentConfig, await userToken(agentConfig, absent));
    assert.equal(notConnected.status, 400);
    assert.equal(notConnected.body.error, 'invalid_grant');
    assert.match(String(notConnected.body.error_description), /has not connected Drive/);

    const unknown = await exchange(agentConfig, await userToken(agentConfig, user), 'urn:agentauth:connection:nothing');
    assert.equal(unknown.body.error, 'invalid_target');
  });

  it('refreshes a stale upstream token once however many exchanges arrive at once, keeping each rotated refresh token', async () => {
    // Tokens of 60 s are stale on arrival (less than a minute left): every exchange refreshes.
    const user = await connected(60);
    const subject = await userToken(agentConfig, user);
    for (const round of [1, 2]) {
      const before = upstream.refreshes();
      const answer = await exchange(agentConfig, subject);
      assert.equal(answer.status, 200, `refresh ${round} with the rotated refresh token: ${JSON.stringify(answer.body)}`);
      assert.equal(upstream.refreshes(), before + 1);
    }
    upstream.setAccessTokenTtl(3600);
    const before = upstream.refreshes();
    const answers = await Promise.all(Array.from({ length: 10 }, () => exchange(agentConfig, subject)));
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(10).fill(200),
    );
    assert.equal(upstream.refreshes(), before + 1, 'exactly one upstream refresh for ten concurrent exchanges');
    assert.equal(new Set(answers.map((a) => a.body.access_token)).size, 1, 'all ten got the one new token');
  });

  it('marks the connection broken when the upstream refuses the refresh token, and tells the user and the agent', async () => {
    const user = await connected(60);
    const subject = await userToken(agentConfig, user);
    // The user revokes agentauth's access at the provider: every refresh token it holds dies.
    for (const value of [...upstream.issued]) await (await upstream.provider.RefreshToken.find(value))?.destroy();
    const answer = await exchange(agentConfig, subject);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_grant');
    assert.match(String(answer.body.error_description), /must reconnect Drive/);
    const again = await exchange(agentConfig, subject);
    assert.match(String(again.body.error_description), /must reconnect Drive/, 'the mark stays although the refusal rolled back');
    const page = await (await browse((await signInToAccount(server, user)).jar, `${server.issuer}/account`)).text();
    assert.match(page, /Needs reconnecting/);
    assert.match(page, /Reconnect Drive/);
  });

  it("stops the agent's access to every connection at once when its grant is revoked", async () => {
    const user = await connected(3600);
    const subject = await userToken(agentConfig, user);
    assert.equal((await exchange(agentConfig, subject)).status, 200);
    const grantId = String((await client.tokenIntrospection(agentConfig, subject)).grant_id);
    const revoked = await server.cli(['grants', 'revoke', grantId]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const after = await exchange(agentConfig, subject);
    assert.equal(after.status, 400);
    assert.equal(after.body.access_token, undefined);
  });

  it('keeps the connection usable after a kill -9 in the middle of an upstream refresh', async () => {
    const user = await connected(60);
    const subject = await userToken(agentConfig, user);
    const held = upstream.holdTokenRequests();
    const interrupted = exchange(agentConfig, subject).catch((err: unknown) => err);
    await held.arrived; // the refresh is on its way upstream, the row locked
    await server.halt('SIGKILL');
    await interrupted;
    restarted = await spawnServer(server.env);
    // The provider never answered that refresh: the refresh token agentauth kept is still good,
    // and the crashed request's lock died with its connection.
    upstream.setAccessTokenTtl(3600);
    const before = upstream.refreshes();
    const answer = await exchange(agentConfig, subject);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(upstream.refreshes(), before + 1);
  });
});

describe('upstream tokens on two instances', {
  skip: testHostsUnavailable ?? (REAL_SERVICES ? undefined : 'needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL)'),
}, () => {
  let cluster: TestCluster;
  let upstream: Upstream;

  before(async () => {
    cluster = await startCluster(2, testHostEnv());
    upstream = await startUpstream([`${cluster.issuer}/account/connections/callback`]);
  });
  after(async () => {
    await cluster?.stop();
    await upstream?.close();
  });

  it('refreshes once for ten concurrent exchanges spread over both instances', async () => {
    await createScope(cluster, 'notes:read', 'Read your notes');
    const agent = await agentFor(cluster, 'Two-instance Agent');
    await registerDrive(cluster, upstream, agent);
    const config = await clientFor(cluster, agent);
    const user = await connectedUser(cluster, upstream, 60);
    const subject = await userTokenAt(cluster, config, user);
    upstream.setAccessTokenTtl(3600);
    const before = upstream.refreshes();
    const answers = await Promise.all(Array.from({ length: 10 }, () => exchange(config, subject)));
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(10).fill(200),
    );
    assert.equal(upstream.refreshes(), before + 1, 'one upstream refresh across both instances');
    assert.equal(new Set(answers.map((a) => a.body.access_token)).size, 1);
  });
});
