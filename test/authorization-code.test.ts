/**
 * Authorization code + PKCE through our real login and consent pages, then refresh with
 * rotation, revocation and introspection, with openid-client as the agent.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, browse, CookieJar, csrfOf, followOnIssuer, openLoginPage, postForm } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1:8765/callback';

describe('authorization code flow with PKCE', () => {
  let server: TestServer;
  let agent: TestAgent;
  let user: TestUser;
  let config: client.Configuration;

  before(async () => {
    server = await startServer();
    await createScope(server, 'notes:read', 'Read your notes');
    await createScope(server, 'notes:write', 'Create and change your notes');
    user = await createUser(server);
    agent = await createAgent(server, { name: 'Notes agent', redirectUris: [REDIRECT_URI], scope: 'notes:read notes:write' });
    config = await clientFor(server, agent);
  });
  after(() => server?.stop());

  async function startFlow(scope = 'notes:read notes:write', extra: Record<string, string> = {}) {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope,
      state,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      ...extra,
    });
    return { verifier, state, url };
  }

  async function obtainTokens(untick: string[] = []) {
    const flow = await startFlow();
    const result = await authorize(server.issuer, flow.url, user, { untick });
    const tokens = await client.authorizationCodeGrant(config, result.callback, { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
    return { ...result, tokens, flow };
  }

  it('issues tokens for exactly the scopes the user left ticked', async () => {
    const { tokens, consentScopes, consentHtml, callback } = await obtainTokens(['notes:write']);
    assert.deepEqual(consentScopes.sort(), ['notes:read', 'notes:write']);
    assert.match(consentHtml, /Notes agent/);
    assert.match(consentHtml, /Read your notes/);
    assert.equal(callback.searchParams.get('iss'), server.issuer, 'RFC 9207 iss in the authorization response');
    assert.equal(tokens.scope, 'notes:read');
    assert.ok(tokens.access_token && tokens.refresh_token);
    assert.ok((tokens.expires_in ?? 0) > 0 && (tokens.expires_in ?? 0) <= 600);
    const info = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.scope, 'notes:read');
    assert.equal(info.client_id, agent.clientId);
  });

  it('rotates refresh tokens; an older one presented again kills the grant', async () => {
    const { tokens } = await obtainTokens();
    const second = await client.refreshTokenGrant(config, tokens.refresh_token!);
    assert.ok(second.refresh_token);
    assert.notEqual(second.refresh_token, tokens.refresh_token);
    assert.equal(second.scope, 'notes:read notes:write');
    const third = await client.refreshTokenGrant(config, second.refresh_token!);
    // The first token is two rotations old: reuse. The whole grant dies, the newest token too.
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    await assert.rejects(client.refreshTokenGrant(config, third.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    assert.equal((await client.tokenIntrospection(config, third.access_token)).active, false);
  });

  it("revocation makes the refresh token and the grant's access tokens inactive", async () => {
    const { tokens } = await obtainTokens();
    await client.tokenRevocation(config, tokens.refresh_token!);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    assert.equal((await client.tokenIntrospection(config, tokens.refresh_token!)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
  });

  it("a code used twice fails the second time and kills the first exchange's tokens", async () => {
    const flow = await startFlow();
    const { callback } = await authorize(server.issuer, flow.url, user);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
    await assert.rejects(
      client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: flow.verifier, expectedState: flow.state }),
      (err: client.ResponseBodyError) => err.error === 'invalid_grant',
    );
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
  });

  it('a code redeemed 10 times at once succeeds at most once', async () => {
    const flow = await startFlow();
    const { callback } = await authorize(server.issuer, flow.url, user);
    const attempts = await Promise.allSettled(
      Array.from({ length: 10 }, () => client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: flow.verifier, expectedState: flow.state })),
    );
    const wins = attempts.filter((a) => a.status === 'fulfilled');
    assert.ok(wins.length <= 1, `${wins.length} redemptions succeeded`);
    for (const a of attempts) {
      if (a.status === 'rejected')
        assert.equal((a.reason as client.ResponseBodyError).error, 'invalid_grant', String(a.reason) + JSON.stringify((a.reason as { cause?: unknown }).cause));
    }
    // Every loser counts as reuse: whatever the winner got is dead.
    for (const w of wins) {
      const tokens = (w as PromiseFulfilledResult<client.TokenEndpointResponse>).value;
      assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    }
  });

  it('a refresh token sent 10 times at once rotates once: every answer carries the same successor', async () => {
    const { tokens } = await obtainTokens();
    const attempts = await Promise.allSettled(Array.from({ length: 10 }, () => client.refreshTokenGrant(config, tokens.refresh_token!)));
    const answers = attempts.map((a) => (a.status === 'fulfilled' ? a.value : assert.fail(`a refresh failed: ${String(a.reason)}`)));
    assert.equal(new Set(answers.map((a) => a.refresh_token)).size, 1, 'one successor');
    assert.equal(new Set(answers.map((a) => a.access_token)).size, 1, 'one access token');
    const next = await client.refreshTokenGrant(config, answers[0]!.refresh_token!);
    assert.ok(next.access_token);
  });

  it("issue-13: a request without scope asks consent for the client's registered scope and gets it", async () => {
    const flow = await startFlow();
    flow.url.searchParams.delete('scope');
    const result = await authorize(server.issuer, flow.url, user);
    assert.deepEqual(result.consentScopes.sort(), ['notes:read', 'notes:write']);
    assert.equal(result.callback.searchParams.get('error'), null, result.callback.href);
    const tokens = await client.authorizationCodeGrant(config, result.callback, { pkceCodeVerifier: flow.verifier, expectedState: flow.state });
    assert.deepEqual(tokens.scope?.split(' ').sort(), ['notes:read', 'notes:write']);
  });

  it('issue-13: a request without scope from a client that registered none is invalid_scope before anyone signs in', async () => {
    const bare = await createAgent(server, { name: 'No scopes', redirectUris: [REDIRECT_URI] });
    const url = client.buildAuthorizationUrl(await clientFor(server, bare), {
      redirect_uri: REDIRECT_URI,
      state: 'st',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const res = await browse(new CookieJar(), url);
    assert.ok([302, 303].includes(res.status), `status ${res.status}`);
    const callback = new URL(res.headers.get('location')!);
    assert.equal(callback.origin + callback.pathname, REDIRECT_URI);
    assert.equal(callback.searchParams.get('error'), 'invalid_scope');
    assert.equal(callback.searchParams.get('state'), 'st');
  });

  it("issue-13: form_post's auto-submit script is allowed by the page's CSP, and nothing else is", async () => {
    const params = {
      client_id: agent.clientId,
      redirect_uri: REDIRECT_URI,
      response_type: 'code',
      response_mode: 'form_post',
      scope: 'notes:read',
      state: 'fp',
    };
    const res = await fetch(`${server.issuer}/auth?${new URLSearchParams(params)}`, { redirect: 'manual' });
    const html = await res.text();
    assert.match(html, new RegExp(`<form method="post" action="${REDIRECT_URI}">`));
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1];
    assert.ok(script, html);
    const csp = res.headers.get('content-security-policy') ?? '';
    const scriptSrc = csp
      .split(';')
      .map((d) => d.trim())
      .find((d) => d.startsWith('script-src'));
    assert.equal(scriptSrc, `script-src 'sha256-${createHash('sha256').update(script).digest('base64')}'`);
    assert.match(csp, /default-src 'none'/);
    // Every other page still allows no script at all.
    const page = await fetch(`${server.issuer}/account`, { redirect: 'manual' });
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'none';/);
  });

  it('Deny returns access_denied to the client', async () => {
    const flow = await startFlow();
    const { callback } = await authorize(server.issuer, flow.url, user, { decision: 'deny' });
    assert.equal(callback.origin + callback.pathname, REDIRECT_URI);
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    assert.equal(callback.searchParams.get('state'), flow.state);
    assert.equal(callback.searchParams.get('iss'), server.issuer);
    assert.equal(callback.searchParams.get('code'), null);
  });

  it('a wrong code_verifier gets invalid_grant', async () => {
    const flow = await startFlow();
    const { callback } = await authorize(server.issuer, flow.url, user);
    await assert.rejects(
      client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: client.randomPKCECodeVerifier(), expectedState: flow.state }),
      (err: client.ResponseBodyError) => err.error === 'invalid_grant',
    );
  });

  it('refuses a request without PKCE, or with plain PKCE, by redirecting an error', async () => {
    const base = { client_id: agent.clientId, redirect_uri: REDIRECT_URI, response_type: 'code', scope: 'notes:read', state: 'xyz' };
    const cases: Record<string, string>[] = [
      base,
      { ...base, code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' },
      { ...base, code_challenge: 'a'.repeat(43), code_challenge_method: 's256' },
    ];
    for (const params of cases) {
      const res = await fetch(`${server.issuer}/auth?${new URLSearchParams(params)}`, { redirect: 'manual' });
      assert.ok([302, 303].includes(res.status), `status ${res.status}`);
      const location = new URL(res.headers.get('location')!);
      assert.equal(location.origin + location.pathname, REDIRECT_URI);
      assert.equal(location.searchParams.get('error'), 'invalid_request');
      assert.equal(location.searchParams.get('state'), 'xyz');
      assert.equal(location.searchParams.get('iss'), server.issuer);
    }
  });

  it('shows an error page, and never redirects, for an unregistered redirect URI', async () => {
    for (const redirectUri of [
      'https://evil.example/callback',
      'http://127.0.0.1:8765/callback/',
      'http://127.0.0.1:8765/Callback',
      'http://127.0.0.1:8765/callback?x=1',
    ]) {
      const flow = await startFlow('notes:read', { redirect_uri: redirectUri });
      const res = await fetch(flow.url, { redirect: 'manual', headers: { accept: 'text/html' } });
      assert.equal(res.status, 400, redirectUri);
      assert.equal(res.headers.get('location'), null);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/);
      const html = await res.text();
      assert.match(html, /redirect_uri/);
      assert.doesNotMatch(html, /at [\w.]+ \(/, 'no stack trace');
    }
  });

  it('allows any port on a loopback redirect URI for a native client', async () => {
    const flow = await startFlow('notes:read', { redirect_uri: 'http://127.0.0.1:49152/callback' });
    const res = await fetch(flow.url, { redirect: 'manual' });
    assert.equal(res.status, 303);
    assert.match(res.headers.get('location') ?? '', /^\/interaction\//);
  });

  it('refuses response_type=token', async () => {
    const flow = await startFlow('notes:read', { response_type: 'token' });
    const res = await fetch(flow.url, { redirect: 'manual' });
    const location = new URL(res.headers.get('location')!);
    // An implicit-style request gets its error in the fragment, where that response type would put it.
    const params = new URLSearchParams(location.hash.slice(1) || location.search);
    assert.equal(params.get('error'), 'unsupported_response_type');
    assert.equal(params.get('access_token'), null);
  });

  it('refuses a consent POST without its CSRF token and changes nothing', async () => {
    const flow = await startFlow();
    const login = await openLoginPage(server.issuer, flow.url);
    const jar = login.jar;
    const res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}/interaction/${login.uid}/login`, { csrf: csrfOf(login.html), username: user.username, password: user.password }),
    );
    const html = await res.text();
    assert.match(html, /Allow/);
    const consentUid = /\/interaction\/([^/]+)\/consent/.exec(html)![1]!;
    const forged = await postForm(jar, `${server.issuer}/interaction/${consentUid}/consent`, { scope: 'notes:read', decision: 'allow' });
    assert.equal(forged.status, 403);
    assert.equal(forged.headers.get('location'), null);
    const wrong = await postForm(jar, `${server.issuer}/interaction/${consentUid}/consent`, { csrf: 'x'.repeat(43), scope: 'notes:read', decision: 'allow' });
    assert.equal(wrong.status, 403);
    // The interaction still waits for consent: the page is shown again, no code was issued.
    const again = await browse(jar, `${server.issuer}/interaction/${consentUid}`);
    assert.equal(again.status, 200);
    assert.match(await again.text(), /Allow/);
  });

  it('a wrong password shows the login page again with a message, after a 303', async () => {
    const flow = await startFlow();
    const { jar, html, uid } = await openLoginPage(server.issuer, flow.url);
    const post = await postForm(jar, `${server.issuer}/interaction/${uid}/login`, { csrf: csrfOf(html), username: user.username, password: 'wrong password' });
    assert.equal(post.status, 303);
    const page = await browse(jar, new URL(post.headers.get('location')!, server.issuer));
    assert.match(await page.text(), /username or password is not right/);
  });

  it('serves the pages with security headers', async () => {
    const flow = await startFlow();
    const jar = new CookieJar();
    const res = await followOnIssuer(jar, server.issuer, await browse(jar, flow.url));
    assert.equal(res.status, 200);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const html = await res.text();
    assert.match(html, /<label for="username">Username<\/label>/);
    assert.match(html, /<label for="password">Password<\/label>/);
    assert.match(html, />Sign in<\/button>/);
    assert.doesNotMatch(html, /<script/);
    assert.doesNotMatch(html, /https?:\/\/(?!localhost)/, 'no remote assets');
  });
});
