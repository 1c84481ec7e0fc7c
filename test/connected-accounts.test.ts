/**
 * Connected accounts against a real upstream OAuth server: a bare oidc-provider on a test host,
 * reached by name over https as a deployment reaches Google or Slack. The operator registers it
 * by discovery; a user connects it from /account (code flow, PKCE, state bound to the session,
 * RFC 9207 iss checked), sees it listed and disconnects it (revoked upstream). No upstream token
 * or secret reaches a log, a page or the database unsealed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import { after, before, describe, it } from 'node:test';
import Provider from 'oidc-provider';
import { browse, CookieJar, csrfOf, postForm, signInToAccount } from './helpers/browserless.ts';
import { createAgent, createUser } from './helpers/factories.ts';
import { openDirect } from './helpers/direct-db.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { createTestHost, testCa, testHostEnv, testHostsUnavailable, type TestHost } from './helpers/test-host.ts';

const CONNECTION = 'drive';

/** The upstream's pages as the user's browser sees them: over https, trusting the test CA. */
function upstreamBrowse(jar: CookieJar, url: string, form?: Record<string, string>): Promise<{ status: number; location?: string; html: string }> {
  const ca = readFileSync(testCa().certFile);
  const body = form && new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: form ? 'POST' : 'GET',
        ca,
        headers: {
          accept: 'text/html',
          ...(jar.cookies.size ? { cookie: jar.header() } : {}),
          ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
        },
      },
      (res) => {
        for (const line of res.headers['set-cookie'] ?? []) {
          const [pair] = line.split(';');
          const eq = pair!.indexOf('=');
          jar.cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, location: res.headers.location, html: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Signs in and consents at the upstream (oidc-provider's development pages), following its
 * redirects until it sends the browser back to agentauth; returns that callback URL.
 */
async function approveUpstream(upstream: TestHost, authorizationUrl: string, login: string): Promise<URL> {
  const jar = new CookieJar();
  let url = authorizationUrl;
  let form: Record<string, string> | undefined;
  for (let step = 0; step < 12; step += 1) {
    const res = await upstreamBrowse(jar, url, form);
    form = undefined;
    if (res.location) {
      const next = new URL(res.location, url);
      if (next.origin !== upstream.origin) return next;
      url = next.toString();
      continue;
    }
    assert.equal(res.status, 200, res.html);
    const action = /<form[^>]+action="([^"]+)"/.exec(res.html)?.[1];
    assert.ok(action, `a form on ${url}`);
    url = new URL(action.replaceAll('&amp;', '&'), url).toString();
    form = res.html.includes('name="login"') ? { prompt: 'login', login, password: 'any' } : { prompt: 'consent' };
  }
  throw new Error('the upstream never sent the browser back');
}

describe('connected accounts', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let upstream: TestHost;
  let provider: Provider;
  const secret = randomBytes(24).toString('base64url');
  /** Every token value the upstream issued, to look for where it must not be. */
  const upstreamTokens: string[] = [];
  const upstreamRevocations: string[] = [];
  let agentId: string;

  before(async () => {
    let handler: http.RequestListener = (_req, res) => res.end();
    upstream = await createTestHost('upstream', (req, res) => handler(req, res));
    server = await startServer(testHostEnv());
    provider = new Provider(upstream.origin, {
      clients: [
        {
          client_id: 'agentauth-vault',
          client_secret: secret,
          redirect_uris: [`${server.issuer}/account/connections/callback`],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      scopes: ['openid', 'offline_access', 'drive.read'],
      features: { revocation: { enabled: true }, devInteractions: { enabled: true } },
      issueRefreshToken: async () => true,
      rotateRefreshToken: true,
      cookies: { keys: [randomBytes(16).toString('hex')] },
      findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    });
    const events = provider as unknown as { on(event: string, listener: (...args: never[]) => void): void };
    for (const event of ['access_token.saved', 'refresh_token.saved']) events.on(event, (token: { jti: string }) => upstreamTokens.push(token.jti));
    events.on('refresh_token.destroyed', (token: { jti: string }) => upstreamRevocations.push(token.jti));
    handler = provider.callback();
    agentId = (await createAgent(server, { name: 'Drive agent' })).clientId;
  });

  after(async () => {
    await server?.stop();
    await upstream?.close();
  });

  it('registers an upstream provider by discovery over https; the secret is sealed and never shown', async () => {
    const made = await server.cli(
      [
        'connections',
        'create',
        CONNECTION,
        '--name',
        'Drive',
        '--issuer',
        upstream.origin,
        '--client-id',
        'agentauth-vault',
        '--client-secret-stdin',
        '--scope',
        'openid offline_access drive.read',
        '--agent',
        agentId,
        '--json',
      ],
      secret,
    );
    assert.equal(made.code, 0, made.stderr);
    const shown = JSON.parse(made.stdout) as Record<string, unknown>;
    assert.equal(shown.token_endpoint, `${upstream.origin}/token`);
    assert.equal(shown.revocation_endpoint, `${upstream.origin}/token/revocation`);
    assert.equal(shown.iss_parameter_supported, true, 'read from the metadata (RFC 9207)');
    assert.deepEqual(shown.agents, [agentId]);
    const listed = await server.cli(['connections', 'list', '--json']);
    assert.ok(!made.stdout.includes(secret) && !listed.stdout.includes(secret), 'the secret is never printed');

    const again = await server.cli(
      ['connections', 'create', CONNECTION, '--name', 'Drive', '--issuer', upstream.origin, '--client-id', 'x', '--client-secret-stdin'],
      's',
    );
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
    const noSecret = await server.cli(['connections', 'create', 'other', '--name', 'Other', '--issuer', upstream.origin, '--client-id', 'x']);
    assert.equal(noSecret.code, 2, 'a secret on the command line is refused as usage');
    const wrongIssuer = await server.cli(
      ['connections', 'create', 'other', '--name', 'Other', '--issuer', `${upstream.origin}/elsewhere`, '--client-id', 'x', '--client-secret-stdin'],
      's',
    );
    assert.equal(wrongIssuer.code, 1);
    assert.match(wrongIssuer.stderr, /discovery failed/);
  });

  it('connects a user account from /account: PKCE, state and iss; the page lists it', async () => {
    const user = await createUser(server);
    const { jar, html } = await signInToAccount(server, user);
    assert.match(html, /Connect Drive/);
    const start = await browse(jar, `${server.issuer}/account/connections/${CONNECTION}/connect`);
    assert.equal(start.status, 303);
    const authorization = new URL(start.headers.get('location')!);
    assert.equal(authorization.origin, upstream.origin);
    assert.equal(authorization.searchParams.get('code_challenge_method'), 'S256');
    assert.ok(authorization.searchParams.get('state'));
    assert.equal(authorization.searchParams.get('client_id'), 'agentauth-vault');

    const callback = await approveUpstream(upstream, authorization.toString(), user.username);
    assert.equal(callback.searchParams.get('iss'), upstream.origin);
    const done = await browse(jar, callback);
    assert.equal(done.status, 303, await done.text());
    assert.equal(done.headers.get('location'), '/account?done=connected');
    const page = await (await browse(jar, `${server.issuer}/account?done=connected`)).text();
    assert.match(page, /Connected\. Agents you allow/);
    assert.match(page, /Disconnect/);
    assert.match(page, /drive\.read/);
    assert.ok(upstreamTokens.length >= 2, 'the upstream issued an access and a refresh token');
    for (const token of upstreamTokens) assert.ok(!page.includes(token), 'no upstream token on the page');
  });

  it('refuses a callback with another state, from another issuer, or in another session', async () => {
    const user = await createUser(server);
    const { jar } = await signInToAccount(server, user);
    const startUrl = `${server.issuer}/account/connections/${CONNECTION}/connect`;

    const begin = async (j: CookieJar) => new URL((await browse(j, startUrl)).headers.get('location')!);
    const forged = await begin(jar);
    const callback = await approveUpstream(upstream, forged.toString(), user.username);
    const withState = (state: string) => {
      const u = new URL(callback);
      u.searchParams.set('state', state);
      return u;
    };
    const wrongState = await browse(jar, withState('not-the-state'));
    assert.equal(wrongState.status, 400);

    const other = await begin(jar);
    const otherCallback = await approveUpstream(upstream, other.toString(), user.username);
    const mixUp = new URL(otherCallback);
    mixUp.searchParams.set('iss', 'https://evil.example');
    const mixedUp = await browse(jar, mixUp);
    assert.equal(mixedUp.status, 400, 'RFC 9207: an answer naming another issuer is refused');
    assert.match(await mixedUp.text(), /did not come from Drive/);

    // The state cookie of one session does not complete a flow in another (login CSRF).
    const victim = await createUser(server);
    const { jar: victimJar } = await signInToAccount(server, victim);
    const attacker = await begin(jar);
    const attackerCallback = await approveUpstream(upstream, attacker.toString(), user.username);
    const injected = await browse(victimJar, attackerCallback);
    assert.equal(injected.status, 400);
    const victimPage = await (await browse(victimJar, `${server.issuer}/account`)).text();
    assert.match(victimPage, /Connect Drive/, 'nothing was connected to the victim');
  });

  it('disconnects behind CSRF: revoked upstream, forgotten here', async () => {
    const user = await createUser(server);
    const { jar } = await signInToAccount(server, user);
    const start = await browse(jar, `${server.issuer}/account/connections/${CONNECTION}/connect`);
    await browse(jar, await approveUpstream(upstream, start.headers.get('location')!, user.username));
    const page = await (await browse(jar, `${server.issuer}/account`)).text();
    const disconnectPath = `/account/connections/${CONNECTION}/disconnect`;
    assert.ok(page.includes(`action="${disconnectPath}"`));

    const forged = await postForm(jar, `${server.issuer}${disconnectPath}`, {});
    assert.equal(forged.status, 403, 'no CSRF token');
    const revokedBefore = upstreamRevocations.length;
    const res = await postForm(jar, `${server.issuer}${disconnectPath}`, { csrf: csrfOf(page) });
    assert.equal(res.status, 303);
    assert.equal(upstreamRevocations.length, revokedBefore + 1, 'RFC 7009 revocation at the upstream');
    assert.equal(res.headers.get('location'), '/account?done=disconnected');
    const after = await (await browse(jar, `${server.issuer}/account?done=disconnected`)).text();
    assert.match(after, /Disconnected\./);
    assert.match(after, /Connect Drive/);
    const twice = await postForm(jar, `${server.issuer}${disconnectPath}`, { csrf: csrfOf(after) });
    assert.equal(twice.status, 404);
  });

  it('keeps upstream tokens and the client secret only sealed, and out of every log line', async () => {
    await server.halt();
    const db = await openDirect(server);
    try {
      const rows = await db.query<Record<string, unknown>>(
        `SELECT (SELECT json_agg(c) FROM connections c)::text AS connections, (SELECT json_agg(a) FROM connected_accounts a)::text AS accounts,
                (SELECT json_agg(e) FROM audit_events e)::text AS audit`,
      );
      const dump = JSON.stringify(rows);
      assert.ok(dump.includes('connected-account') === false, 'associated data is not stored beside the value');
      assert.ok(!dump.includes(secret), 'the client secret is sealed');
      for (const token of upstreamTokens) assert.ok(!dump.includes(token), 'no upstream token in the database unsealed');
      assert.match(dump, /connection\.connected/);
      assert.match(dump, /connection\.disconnected/);
    } finally {
      await db.close();
    }
    const output = server.output();
    assert.ok(!output.includes(secret));
    for (const token of upstreamTokens) assert.ok(!output.includes(token), 'no upstream token in a log line');
  });
});
