/**
 * Issue 19, step-up (RFC 9470): tokens and introspection carry the sign-in's acr and auth_time;
 * the resource-server helper refuses a token whose sign-in is older than an action needs with
 * 401 insufficient_user_authentication and a challenge naming max_age; the agent asks again with
 * max_age and the user is asked for the password again even though the browser is signed in.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createResourceServer } from 'agentauth/resource-server';
import * as client from 'openid-client';
import { authorize, browse, CookieJar, followOnIssuer } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const API = 'https://bank.example.com/';
const PASSWORD_ACR = 'urn:agentauth:acr:password';
const payloadOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

describe('step-up authentication', () => {
  let server: TestServer;
  let config: client.Configuration;

  before(async () => {
    server = await startServer();
    await createScope(server, 'bank:transfer', 'Move your money');
    assert.equal((await server.cli(['resources', 'create', API, '--scopes', 'bank:transfer', '--token-format', 'jwt'])).code, 0);
    config = await clientFor(server, await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'openid bank:transfer' }));
  });
  after(() => server?.stop());

  async function authorizationUrl(extra: Record<string, string> = {}) {
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'bank:transfer',
      resource: API,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      ...extra,
    });
    return { url, verifier };
  }

  it('issue-19: the access token and the metadata carry the sign-in: acr and auth_time', async () => {
    const meta = (await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    assert.deepEqual(meta.acr_values_supported, [PASSWORD_ACR]);
    const user = await createUser(server);
    const before = Math.floor(Date.now() / 1000);
    const { url, verifier } = await authorizationUrl();
    const { callback } = await authorize(server.issuer, url, user);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: API });
    const claims = payloadOf(tokens.access_token);
    assert.equal(claims.acr, PASSWORD_ACR);
    assert.ok(typeof claims.auth_time === 'number' && claims.auth_time >= before - 1 && claims.auth_time <= Math.ceil(Date.now() / 1000));
  });

  it('issue-19: the helper demands a fresh sign-in with insufficient_user_authentication; max_age asks for the password again', async () => {
    const user = await createUser(server);
    const jar = new CookieJar();
    const first = await authorizationUrl();
    const { callback } = await authorize(server.issuer, first.url, user, {}, jar);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: first.verifier }, { resource: API });

    const rs = createResourceServer({ issuer: server.issuer, resource: API, clockToleranceSeconds: 0 });
    const api = http.createServer(async (req, res) => {
      const fresh = req.url === '/transfer';
      const token = await rs.authenticate(req, res, { scopes: ['bank:transfer'], ...(fresh ? { maxAge: 0 } : {}) });
      if (token) res.writeHead(200).end('ok');
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
      const headers = { authorization: `Bearer ${tokens.access_token}` };
      assert.equal((await fetch(`${base}/balance`, { headers })).status, 200);
      const refused = await fetch(`${base}/transfer`, { headers });
      assert.equal(refused.status, 401);
      const challenge = refused.headers.get('www-authenticate') ?? '';
      assert.match(challenge, /^Bearer error="insufficient_user_authentication"/);
      assert.match(challenge, /max_age="0"/);
      assert.equal(((await refused.json()) as { error: string }).error, 'insufficient_user_authentication');
    } finally {
      api.close();
    }

    // Without max_age the signed-in browser is not asked again; with it, the login page comes back.
    const again = await authorizationUrl();
    const quiet = await followOnIssuer(jar, server.issuer, await browse(jar, again.url));
    assert.doesNotMatch(await quiet.text().catch(() => ''), /name="password"/);
    // OIDC's rule, which oidc-provider keeps: max_age comes with the openid scope.
    const stepUp = await authorizationUrl({ max_age: '0', scope: 'openid bank:transfer' });
    const login = await followOnIssuer(jar, server.issuer, await browse(jar, stepUp.url));
    assert.match(await login.text(), /name="password"/);
  });
});
