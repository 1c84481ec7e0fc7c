/**
 * After a full run of every flow, including failures, no log line and no audit row holds a
 * password, code, verifier, token, client assertion or configured secret; every request log line
 * has a request id.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, csrfOf, openLoginPage, postForm } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

describe('log hygiene', () => {
  let server: TestServer;
  const secrets = new Set<string>();
  const remember = (...values: (string | undefined | null)[]) => {
    for (const v of values) if (v && v.length >= 8) secrets.add(v);
  };

  before(async () => {
    server = await startServer({ LOG_LEVEL: 'trace' });
  });
  after(() => server?.stop());

  it('exercises every flow, successful and failing', async () => {
    await createScope(server, 'mail:send', 'Send mail as you');
    const user = await createUser(server);
    remember(user.password);
    const agent = await createAgent(server, {
      redirectUris: ['http://127.0.0.1/cb'],
      scope: 'mail:send',
      grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
    });
    const config = await clientFor(server, agent);
    config[client.customFetch] = async (url, options) => {
      const body = new URLSearchParams(String(options.body ?? ''));
      remember(body.get('client_assertion'), body.get('code'), body.get('code_verifier'), body.get('refresh_token'), body.get('token'));
      return fetch(url, options as RequestInit);
    };

    // A failed login first, with a password that must not appear anywhere.
    const wrongPassword = 'definitely-not-the-password-123';
    remember(wrongPassword);
    const verifier = client.randomPKCECodeVerifier();
    remember(verifier);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'mail:send',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: 'st4te-value',
    });
    const { jar, html, uid } = await openLoginPage(server.issuer, url);
    await postForm(jar, `${server.issuer}/interaction/${uid}/login`, { csrf: csrfOf(html), username: user.username, password: wrongPassword });

    const { callback } = await authorize(server.issuer, url, user, {}, jar);
    remember(callback.searchParams.get('code'));
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: 'st4te-value' });
    remember(tokens.access_token, tokens.refresh_token);
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!);
    remember(refreshed.access_token, refreshed.refresh_token);
    const third = await client.refreshTokenGrant(config, refreshed.refresh_token!);
    remember(third.access_token, third.refresh_token);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!)); // reuse
    await client.tokenIntrospection(config, refreshed.access_token);
    await client.tokenRevocation(config, third.refresh_token!).catch(() => undefined);
    const cc = await client.clientCredentialsGrant(config, { scope: 'mail:send' });
    remember(cc.access_token);
    await assert.rejects(client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: 'st4te-value' })); // code reuse
  });

  it('finds none of those values, nor the configured secrets, in the server log', () => {
    if (server.env.KEY_ENCRYPTION_KEY) remember(server.env.KEY_ENCRYPTION_KEY);
    for (const key of (server.env.COOKIE_KEYS ?? '').split(',')) remember(key);
    if (server.env.DATA_DIR) {
      const generated = JSON.parse(readFileSync(path.join(server.env.DATA_DIR, 'secrets.json'), 'utf8')) as { keyEncryptionKey: string; cookieKeys: string[] };
      remember(generated.keyEncryptionKey, ...generated.cookieKeys);
    }
    const log = server.output();
    assert.ok(secrets.size >= 12, `collected ${secrets.size} secret values`);
    for (const secret of secrets) assert.ok(!log.includes(secret), `a secret value appears in the log: ${secret.slice(0, 4)}…`);
  });

  it('finds none of those values in any audit row', async () => {
    const exported = await server.cli(['audit', 'export', '--json']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.ok(JSON.parse(exported.stdout).events.length > 10);
    for (const secret of secrets) assert.ok(!exported.stdout.includes(secret), `a secret value appears in the audit trail: ${secret.slice(0, 4)}…`);
  });

  it('writes JSON lines with a request id for every request', () => {
    const lines = server
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    const requests = lines.map((l) => JSON.parse(l) as { msg: string; requestId?: string; path?: string }).filter((l) => l.msg === 'request');
    assert.ok(requests.length > 10);
    for (const r of requests) {
      assert.match(r.requestId ?? '', /^[0-9a-f-]{36}$/);
      assert.ok(!r.path?.includes('?'), 'paths are logged without query strings');
    }
  });
});
