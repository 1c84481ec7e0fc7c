/**
 * Connected accounts against a real upstream OAuth server: a bare oidc-provider on a test host,
 * reached by name over https as a deployment reaches Google or Slack. The operator registers it
 * by discovery; a user connects it from /account (code flow, PKCE, state bound to the session,
 * RFC 9207 iss checked), sees it listed and disconnects it (revoked upstream). No upstream token
 * or secret reaches a log, a page or the database unsealed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { browse, type CookieJar, csrfOf, postForm, signInToAccount } from './helpers/browserless.ts';
import { createAgent, createUser } from './helpers/factories.ts';
import { openDirect } from './helpers/direct-db.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';
import { startUpstream, type Upstream } from './helpers/upstream-provider.ts';

const CONNECTION = 'drive';

describe('connected accounts', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let upstream: Upstream;
  let agentId: string;

  before(async () => {
    server = await startServer(testHostEnv());
    upstream = await startUpstream([`${server.issuer}/account/connections/callback`]);
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
        upstream.host.origin,
        '--client-id',
        'agentauth-vault',
        '--client-secret-stdin',
        '--scope',
        'openid offline_access drive.read',
        '--agent',
        agentId,
        '--json',
      ],
      upstream.secret,
    );
    assert.equal(made.code, 0, made.stderr);
    const shown = JSON.parse(made.stdout) as Record<string, unknown>;
    assert.equal(shown.token_endpoint, `${upstream.host.origin}/token`);
    assert.equal(shown.revocation_endpoint, `${upstream.host.origin}/token/revocation`);
    assert.equal(shown.iss_parameter_supported, true, 'read from the metadata (RFC 9207)');
    assert.deepEqual(shown.agents, [agentId]);
    const listed = await server.cli(['connections', 'list', '--json']);
    assert.ok(!made.stdout.includes(upstream.secret) && !listed.stdout.includes(upstream.secret), 'the secret is never printed');

    const again = await server.cli(
      ['connections', 'create', CONNECTION, '--name', 'Drive', '--issuer', upstream.host.origin, '--client-id', 'x', '--client-secret-stdin'],
      's',
    );
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
    const noSecret = await server.cli(['connections', 'create', 'other', '--name', 'Other', '--issuer', upstream.host.origin, '--client-id', 'x']);
    assert.equal(noSecret.code, 2, 'a secret on the command line is refused as usage');
    const wrongIssuer = await server.cli(
      ['connections', 'create', 'other', '--name', 'Other', '--issuer', `${upstream.host.origin}/elsewhere`, '--client-id', 'x', '--client-secret-stdin'],
      's',
    );
    assert.equal(wrongIssuer.code, 1);
    assert.match(wrongIssuer.stderr, /discovery failed/);

    // A provider without metadata: its endpoints named, each checked as a URL agentauth may call.
    const explicit = await server.cli(
      ['connections', 'create', 'explicit', '--name', 'Explicit', '--authorization-endpoint', `${upstream.host.origin}/auth`].concat([
        '--token-endpoint',
        `${upstream.host.origin}/token`,
        '--client-id',
        'x',
        '--client-secret-stdin',
        '--json',
      ]),
      's',
    );
    assert.equal(explicit.code, 0, explicit.stderr);
    const named = JSON.parse(explicit.stdout) as Record<string, unknown>;
    assert.deepEqual([named.issuer, named.revocation_endpoint, named.iss_parameter_supported], [null, null, false]);
    const loopback = await server.cli(
      ['connections', 'create', 'loopback', '--name', 'Loopback', '--authorization-endpoint', 'https://127.0.0.1/auth'].concat([
        '--token-endpoint',
        'https://127.0.0.1/token',
        '--client-id',
        'x',
        '--client-secret-stdin',
      ]),
      's',
    );
    assert.equal(loopback.code, 1, 'a token endpoint on a refused address is refused at registration');
    assert.equal((await server.cli(['connections', 'delete', 'explicit'])).code, 0);
  });

  it('connects a user account from /account: PKCE, state and iss; the page lists it', async () => {
    const user = await createUser(server);
    const { jar, html } = await signInToAccount(server, user);
    assert.match(html, /Connect Drive/);
    const start = await browse(jar, `${server.issuer}/account/connections/${CONNECTION}/connect`);
    assert.equal(start.status, 303);
    const authorization = new URL(start.headers.get('location')!);
    assert.equal(authorization.origin, upstream.host.origin);
    assert.equal(authorization.searchParams.get('code_challenge_method'), 'S256');
    assert.ok(authorization.searchParams.get('state'));
    assert.equal(authorization.searchParams.get('client_id'), 'agentauth-vault');

    const callback = await upstream.approve(authorization.toString(), user.username);
    assert.equal(callback.searchParams.get('iss'), upstream.host.origin);
    const done = await browse(jar, callback);
    assert.equal(done.status, 303, await done.text());
    assert.equal(done.headers.get('location'), '/account?done=connected');
    const page = await (await browse(jar, `${server.issuer}/account?done=connected`)).text();
    assert.match(page, /Connected\. Agents you allow/);
    assert.match(page, /Disconnect/);
    assert.match(page, /drive\.read/);
    assert.ok(upstream.issued.length >= 2, 'the upstream issued an access and a refresh token');
    for (const token of upstream.issued) assert.ok(!page.includes(token), 'no upstream token on the page');
  });

  it('refuses a callback with another state, from another issuer, or in another session', async () => {
    const user = await createUser(server);
    const { jar } = await signInToAccount(server, user);
    const startUrl = `${server.issuer}/account/connections/${CONNECTION}/connect`;

    const begin = async (j: CookieJar) => new URL((await browse(j, startUrl)).headers.get('location')!);
    const forged = await begin(jar);
    const callback = await upstream.approve(forged.toString(), user.username);
    const withState = (state: string) => {
      const u = new URL(callback);
      u.searchParams.set('state', state);
      return u;
    };
    const wrongState = await browse(jar, withState('not-the-state'));
    assert.equal(wrongState.status, 400);

    const other = await begin(jar);
    const otherCallback = await upstream.approve(other.toString(), user.username);
    const mixUp = new URL(otherCallback);
    mixUp.searchParams.set('iss', 'https://evil.example');
    const mixedUp = await browse(jar, mixUp);
    assert.equal(mixedUp.status, 400, 'RFC 9207: an answer naming another issuer is refused');
    assert.match(await mixedUp.text(), /did not come from Drive/);

    // The state cookie of one session does not complete a flow in another (login CSRF).
    const victim = await createUser(server);
    const { jar: victimJar } = await signInToAccount(server, victim);
    const attacker = await begin(jar);
    const attackerCallback = await upstream.approve(attacker.toString(), user.username);
    const injected = await browse(victimJar, attackerCallback);
    assert.equal(injected.status, 400);
    const victimPage = await (await browse(victimJar, `${server.issuer}/account`)).text();
    assert.match(victimPage, /Connect Drive/, 'nothing was connected to the victim');
  });

  it('disconnects behind CSRF: revoked upstream, forgotten here', async () => {
    const user = await createUser(server);
    const { jar } = await signInToAccount(server, user);
    const start = await browse(jar, `${server.issuer}/account/connections/${CONNECTION}/connect`);
    await browse(jar, await upstream.approve(start.headers.get('location')!, user.username));
    const page = await (await browse(jar, `${server.issuer}/account`)).text();
    const disconnectPath = `/account/connections/${CONNECTION}/disconnect`;
    assert.ok(page.includes(`action="${disconnectPath}"`));

    const forged = await postForm(jar, `${server.issuer}${disconnectPath}`, {});
    assert.equal(forged.status, 403, 'no CSRF token');
    const revokedBefore = upstream.destroyed.length;
    const res = await postForm(jar, `${server.issuer}${disconnectPath}`, { csrf: csrfOf(page) });
    assert.equal(res.status, 303);
    assert.equal(upstream.destroyed.length, revokedBefore + 1, 'RFC 7009 revocation at the upstream');
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
      assert.ok(!dump.includes(upstream.secret), 'the client secret is sealed');
      for (const token of upstream.issued) assert.ok(!dump.includes(token), 'no upstream token in the database unsealed');
      assert.match(dump, /connection\.connected/);
      assert.match(dump, /connection\.disconnected/);
    } finally {
      await db.close();
    }
    const output = server.output();
    assert.ok(!output.includes(upstream.secret));
    for (const token of upstream.issued) assert.ok(!output.includes(token), 'no upstream token in a log line');
  });
});
