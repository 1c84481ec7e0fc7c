/**
 * Limits: tokens per client per minute (its own limit, or TOKEN_RATE_LIMIT), registrations per
 * IP per hour, failed sign-ins per IP. Over the limit: 429 with Retry-After.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { csrfOf, openLoginPage, postForm, postToken } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { clientAssertion, generateTestKey } from './helpers/jwt.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('rate limits', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ TOKEN_RATE_LIMIT: '1000', REGISTRATION_RATE_LIMIT: '3', LOGIN_FAILURE_LIMIT: '3' });
    await createScope(server, 'limits:test', 'Limits');
  });
  after(() => server?.stop());

  it("limits a client's token requests per minute, with its own limit, and only counts its real requests", async () => {
    const key = generateTestKey('ES256');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], jwks: { keys: [key.publicJwk] } });
    const set = await server.cli(['clients', 'update', agent.clientId, '--rate-limit', '2', '--json']);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(JSON.parse(set.stdout).token_rate_limit, 2);
    // The window is the calendar minute: start well inside one so the test cannot straddle two.
    const secondsIntoMinute = (Date.now() / 1000) % 60;
    if (secondsIntoMinute > 50) await new Promise((resolve) => setTimeout(resolve, (61 - secondsIntoMinute) * 1000));
    const request = (assertion = clientAssertion(key, agent.clientId, server.issuer)) =>
      postToken(server.issuer, { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion });
    // Someone without the key cannot spend the agent's allowance.
    const forger = generateTestKey('ES256');
    for (let i = 0; i < 4; i++) assert.equal((await request(clientAssertion(forger, agent.clientId, server.issuer))).status, 401);
    assert.equal((await request()).status, 200);
    assert.equal((await request()).status, 200);
    const limited = await request();
    assert.equal(limited.status, 429);
    const retryAfter = Number(limited.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    const body = (await limited.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'too_many_requests');
    // Other clients are not affected.
    const other = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'limits:test' });
    assert.ok((await client.clientCredentialsGrant(await clientFor(server, other), { scope: 'limits:test' })).access_token);
  });

  it('limits registrations per IP address', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${server.issuer}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"redirect_uris":["https://a.example/cb"]}',
      });
      statuses.push(res.status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 429]);
  });

  it('stops checking passwords after too many failed sign-ins from one address', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'limits:test' });
    const config = await clientFor(server, agent);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'limits:test',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const { jar, html, uid } = await openLoginPage(server.issuer, url);
    const attempt = (password: string) => postForm(jar, `${server.issuer}/interaction/${uid}/login`, { csrf: csrfOf(html), username: user.username, password });
    for (let i = 0; i < 3; i++) assert.equal((await attempt('wrong password')).status, 303);
    const blocked = await attempt(user.password);
    assert.equal(blocked.status, 429);
    assert.ok(Number(blocked.headers.get('retry-after')) > 0);
    assert.match(await blocked.text(), /Too many failed sign-ins/);
  });
});
