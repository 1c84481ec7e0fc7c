/**
 * Authorization endpoint hygiene (SECURITY-TESTS, W-03): state comes
 * back byte for byte, the PKCE challenge is never echoed, duplicate parameters are refused, no
 * CORS on /auth, and a session identifier planted before sign-in is not the one after it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, browse, CookieJar, csrfOf, followOnIssuer, postForm } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';

describe('authorization endpoint hygiene', () => {
  let server: TestServer;
  let agent: TestAgent;
  let config: client.Configuration;
  let user: TestUser;

  before(async () => {
    server = await startServer();
    await createScope(server, 'a:read', 'Read A');
    user = await createUser(server);
    agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'a:read' });
    config = await clientFor(server, agent);
  });
  after(() => server?.stop());

  const request = async (extra: Record<string, string> = {}) => {
    const verifier = client.randomPKCECodeVerifier();
    const challenge = await client.calculatePKCECodeChallenge(verifier);
    return {
      verifier,
      challenge,
      url: client.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT_URI,
        scope: 'a:read',
        code_challenge: challenge,
        code_challenge_method: 'S256',
        ...extra,
      }),
    };
  };

  it('R-40/R-39: returns state byte for byte, with iss, and works without state', async () => {
    const state = 'a&b=c#d%20e/ü';
    const { url, challenge } = await request({ state });
    const { callback, consentHtml } = await authorize(server.issuer, url, user);
    assert.equal(callback.searchParams.get('state'), state);
    assert.equal(callback.searchParams.get('iss'), server.issuer);
    // the challenge is nowhere the browser or a referrer could read it back.
    assert.ok(!callback.href.includes(challenge));
    assert.ok(!consentHtml.includes(challenge));
    const bare = await request();
    const second = await authorize(server.issuer, bare.url, user);
    assert.equal(second.callback.searchParams.get('state'), null);
    assert.ok(second.callback.searchParams.get('code'));
  });

  it('R-32: refuses duplicate parameters', async () => {
    const { url } = await request({ state: 's' });
    url.searchParams.append('scope', 'a:read');
    const res = await fetch(url, { redirect: 'manual' });
    const location = new URL(res.headers.get('location')!);
    assert.equal(location.searchParams.get('error'), 'invalid_request');
    assert.match(location.searchParams.get('error_description') ?? '', /scope/);
  });

  it('R-44: offers no CORS on the authorization endpoint', async () => {
    const { url } = await request();
    const preflight = await fetch(url, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    assert.equal(preflight.headers.get('access-control-allow-origin'), null);
    const simple = await fetch(url, { redirect: 'manual', headers: { origin: 'https://evil.example' } });
    assert.equal(simple.headers.get('access-control-allow-origin'), null);
  });

  it('W-03: a session cookie planted before sign-in is not the session after it', async () => {
    const jar = new CookieJar();
    jar.cookies.set('_session', 'attacker-chosen-session-id');
    const { url } = await request();
    let res = await followOnIssuer(jar, server.issuer, await browse(jar, url));
    const html = await res.text();
    const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)![1]!;
    res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
    );
    assert.notEqual(jar.cookies.get('_session'), 'attacker-chosen-session-id');
    assert.ok(jar.cookies.get('_session'), 'a session exists after sign-in');
  });
});
