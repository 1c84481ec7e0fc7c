/**
 * Malformed and hostile requests get a clean OAuth error or an HTML error page with the right
 * status: never a 500, never a stack trace. Also: Secure cookies behind a TLS-terminating proxy.
 */
import assert from 'node:assert/strict';
import { KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, csrfOf, openLoginPage, postForm, postToken } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { clientAssertion, type TestKey } from './helpers/jwt.ts';
import { freePort, startServer, type TestServer } from './helpers/server.ts';

const STACK_TRACE = /at [\w.<>]+ \(|node:internal|\.ts:\d+/;

describe('bad input', () => {
  let server: TestServer;
  let agent: TestAgent;

  before(async () => {
    server = await startServer();
    await createScope(server, 'docs:read', 'Read your documents');
    agent = await createAgent(server, { redirectUris: ['https://agent.example/cb'], scope: 'docs:read' });
  });
  after(() => server?.stop());

  async function expectJsonError(res: Response, status: number, error: string | RegExp) {
    assert.equal(res.status, status, `status for ${res.url}`);
    const text = await res.text();
    assert.doesNotMatch(text, STACK_TRACE);
    const body = JSON.parse(text) as { error: string; error_description?: string };
    assert.match(body.error, typeof error === 'string' ? new RegExp(`^${error}$`) : error);
  }

  it('answers token endpoint misuse with RFC 6749 errors', async () => {
    const post = (body: string, contentType = 'application/x-www-form-urlencoded') =>
      fetch(`${server.issuer}/token`, { method: 'POST', headers: { 'content-type': contentType }, body });
    await expectJsonError(await post(JSON.stringify({ grant_type: 'client_credentials' }), 'application/json'), 400, 'invalid_request');
    await expectJsonError(await post(''), 400, 'invalid_request');
    await expectJsonError(await post('grant_type=authorization_code&grant_type=refresh_token'), 400, 'invalid_request');
    await expectJsonError(await post(`grant_type=client_credentials&pad=${'a'.repeat(100_000)}`), 400, 'invalid_request');
    const withAssertion = (assertion: string) =>
      postToken(server.issuer, {
        grant_type: 'client_credentials',
        client_id: agent.clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      });
    await expectJsonError(await withAssertion('not.a.jwt'), 400, 'invalid_request');
    await expectJsonError(await withAssertion('eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.'), 401, 'invalid_client');
    const get = await fetch(`${server.issuer}/token`);
    assert.ok([400, 404, 405].includes(get.status), `GET /token: ${get.status}`);
  });

  it('never honours credentials in the token endpoint query string', async () => {
    const res = await fetch(`${server.issuer}/token?grant_type=client_credentials&client_id=${agent.clientId}`, { method: 'POST' });
    assert.ok(res.status === 400 || res.status === 401, String(res.status));
  });

  it('answers authorization endpoint garbage with an error page, not a redirect', async () => {
    for (const query of [
      '',
      'client_id=unknown&response_type=code&redirect_uri=https://agent.example/cb',
      `client_id=${agent.clientId}&redirect_uri=https://evil.example/cb&response_type=code`,
      'client_id=%00%ff&redirect_uri=%zz',
    ]) {
      const res = await fetch(`${server.issuer}/auth?${query}`, { redirect: 'manual', headers: { accept: 'text/html' } });
      assert.equal(res.status, 400, query);
      assert.equal(res.headers.get('location'), null);
      const html = await res.text();
      assert.doesNotMatch(html, STACK_TRACE);
      assert.equal(res.headers.get('x-frame-options'), 'DENY');
    }
  });

  it('answers unknown paths and stale interactions with 404 or 400, never 500', async () => {
    const missing = await fetch(`${server.issuer}/nope`, { headers: { accept: 'application/json' } });
    assert.equal(missing.status, 404);
    const stale = await fetch(`${server.issuer}/interaction/does-not-exist`, { headers: { accept: 'text/html' } });
    assert.equal(stale.status, 400);
    assert.match(await stale.text(), /expired or was opened in another browser/);
    const stalePost = await fetch(`${server.issuer}/interaction/does-not-exist/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
      body: 'username=a&password=b',
    });
    assert.equal(stalePost.status, 400);
  });

  it('issue-13: a NUL character in any parameter is a 400, never a 500', async () => {
    const config = await clientFor(server, agent);
    const authorizationUrl = async (extra: Record<string, string>) =>
      client.buildAuthorizationUrl(config, {
        redirect_uri: 'https://agent.example/cb',
        scope: 'docs:read',
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
        ...extra,
      });
    for (const extra of [{ nonce: '\u0000' }, { state: 'a\u0000b' }, { resource: 'https://x.example/\u0000' }] as Record<string, string>[]) {
      const res = await fetch(await authorizationUrl(extra), { redirect: 'manual', headers: { accept: 'text/html' } });
      assert.equal(res.status, 400, JSON.stringify(extra));
      assert.doesNotMatch(await res.text(), STACK_TRACE);
    }
    // Our own forms: the sign-in page.
    const { jar, html, uid } = await openLoginPage(server.issuer, await authorizationUrl({}));
    const login = await postForm(jar, `${server.issuer}/interaction/${uid}/login`, { csrf: csrfOf(html), username: 'a\u0000b', password: 'p\u0000' });
    assert.equal(login.status, 400);
    // The token endpoint, and a registration's JSON.
    const assertion = (jti: string) =>
      clientAssertion({ alg: 'ES256', kid: agent.kid!, privateKey: KeyObject.from(agent.privateKey!) } as TestKey, agent.clientId, server.issuer, { jti });
    const jwtBearer = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
    await expectJsonError(
      await postToken(server.issuer, {
        grant_type: 'refresh_token',
        refresh_token: 'x\u0000',
        client_assertion_type: jwtBearer,
        client_assertion: assertion('j1'),
      }),
      400,
      'invalid_grant',
    );
    // The assertion's jti is stored (replay detection): a NUL in it is the client's error.
    const nulJti = await postToken(server.issuer, {
      grant_type: 'client_credentials',
      client_assertion_type: jwtBearer,
      client_assertion: assertion('j\u0000'),
    });
    assert.ok([400, 401].includes(nulJti.status), `jti with NUL: ${nulJti.status}`);
    const registration = await fetch(`${server.issuer}/reg`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${JSON.parse((await server.cli(['registration-tokens', 'create', '--json'])).stdout).token}`,
      },
      body: JSON.stringify({ redirect_uris: ['https://agent.example/cb'], token_endpoint_auth_method: 'none', contacts: ['a\u0000@example.com'] }),
    });
    await expectJsonError(registration, 400, /^invalid_(request|client_metadata)$/);
  });

  it('limits form bodies on our own pages', async () => {
    const config = await clientFor(server, agent);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'https://agent.example/cb',
      scope: 'docs:read',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const { jar, html, uid } = await openLoginPage(server.issuer, url);
    const huge = await postForm(jar, `${server.issuer}/interaction/${uid}/login`, { csrf: csrfOf(html), username: 'a', password: 'b'.repeat(1024 * 1024) });
    assert.equal(huge.status, 413);
    const json = await browse(jar, `${server.issuer}/interaction/${uid}/login`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(json.status, 415);
    const crossSite = await browse(jar, `${server.issuer}/interaction/${uid}/login`, {
      method: 'POST',
      body: `csrf=${csrfOf(html)}&username=a&password=b`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(crossSite.status, 403);
  });

  it('marks cookies Secure behind a TLS-terminating proxy only when TRUST_PROXY is set', async () => {
    const config = await clientFor(server, agent);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'https://agent.example/cb',
      scope: 'docs:read',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const res = await fetch(url, { redirect: 'manual', headers: { 'x-forwarded-proto': 'https' } });
    const cookies = res.headers.getSetCookie();
    assert.ok(cookies.length > 0);
    // TRUST_PROXY is off here: a forwarded header is not believed.
    for (const c of cookies) {
      assert.doesNotMatch(c, /;\s*secure/i);
      assert.match(c, /httponly/i);
      assert.match(c, /samesite=lax/i);
    }
  });
});

describe('behind a proxy (TRUST_PROXY=true)', () => {
  let server: TestServer;
  before(async () => {
    const port = await freePort();
    server = await startServer({ PORT: String(port), ISSUER: `https://localhost:${port}`, TRUST_PROXY: 'true' });
  });
  after(() => server?.stop());

  it('sets Secure cookies when the proxy says the request came over https', async () => {
    const agent = await createAgent(server, { redirectUris: ['https://agent.example/cb'] });
    const challenge = await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier());
    const query = new URLSearchParams({
      client_id: agent.clientId,
      redirect_uri: 'https://agent.example/cb',
      response_type: 'code',
      scope: 'openid',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    const res = await fetch(`${server.baseUrl}/auth?${query}`, { redirect: 'manual', headers: { 'x-forwarded-proto': 'https' } });
    assert.equal(res.status, 303);
    const cookies = res.headers.getSetCookie();
    assert.ok(cookies.length > 0);
    for (const c of cookies) assert.match(c, /;\s*secure/i, c);
    assert.match(res.headers.get('strict-transport-security') ?? '', /max-age=/);
  });
});
