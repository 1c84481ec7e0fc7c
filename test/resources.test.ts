/**
 * Resource servers (RFC 8707, RFC 9068, RFC 7662): tokens requested for a registered resource
 * server are bound to it, JWT or opaque as it chose; only the token's own client or the resource
 * server it is meant for may introspect it; unknown resources are invalid_target.
 */
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, codeFlowTokens, postToken, signInToAccount } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const NOTES_API = 'https://notes.example.com/';
const CALENDAR_API = 'https://calendar.example.com/';

/** The code flow for several resource servers at once (`resource` repeated, RFC 8707 §2.1). */
async function multiResourceTokens(issuer: string, config: client.Configuration, user: TestUser, scope: string, resources: string[]) {
  const verifier = client.randomPKCECodeVerifier();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: 'http://127.0.0.1/cb',
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  for (const resource of resources) url.searchParams.append('resource', resource);
  const { callback } = await authorize(issuer, url, user);
  return client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: resources[0]! });
}

const auditTypes = async (server: TestServer, clientId: string) =>
  (JSON.parse((await server.cli(['audit', 'export', '--client', clientId, '--json'])).stdout).events as { event_type: string }[]).map((e) => e.event_type);

describe('resource servers', () => {
  let server: TestServer;
  let notesClient: client.Configuration;
  let calendarClient: client.Configuration;

  before(async () => {
    server = await startServer();
    for (const [name, text] of [
      ['notes:read', 'Read your notes'],
      ['notes:write', 'Change your notes'],
      ['calendar:read', 'See your calendar'],
    ])
      await createScope(server, name!, text!);
    // Each resource server authenticates as a client of its own when it introspects.
    const notesRs = await createAgent(server, { name: 'Notes API', grantTypes: ['client_credentials'] });
    const calendarRs = await createAgent(server, { name: 'Calendar API', grantTypes: ['client_credentials'] });
    notesClient = await clientFor(server, notesRs);
    calendarClient = await clientFor(server, calendarRs);
    const made = await server.cli(['resources', 'create', NOTES_API, '--scopes', 'notes:read notes:write', '--client', notesRs.clientId, '--json']);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(JSON.parse(made.stdout).access_token_ttl, 600);
    const jwt = await server.cli([
      'resources',
      'create',
      CALENDAR_API,
      '--scopes',
      'calendar:read',
      '--token-format',
      'jwt',
      '--client',
      calendarRs.clientId,
      '--json',
    ]);
    assert.equal(jwt.code, 0, jwt.stderr);
    assert.equal(JSON.parse(jwt.stdout).access_token_ttl, 300, 'JWTs are short-lived by default');
  });
  after(() => server?.stop());

  it('refuses bad registrations', async () => {
    for (const [args, message] of [
      [['resources', 'create', 'http://api.example.com/', '--scopes', 'notes:read'], /https/],
      [['resources', 'create', 'https://api.example.com/#x', '--scopes', 'notes:read'], /fragment/],
      [['resources', 'create', 'https://api.example.com/', '--scopes', 'nope:nope'], /unknown scope/],
      [['resources', 'create', NOTES_API, '--scopes', 'notes:read'], /already exists/],
    ] as const) {
      const r = await server.cli([...args]);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, message);
    }
    const listed = JSON.parse((await server.cli(['resources', 'list', '--json'])).stdout) as { resources: { identifier: string }[] };
    assert.deepEqual(listed.resources.map((r) => r.identifier).sort(), [CALENDAR_API, NOTES_API]);
  });

  it('issues a JWT access token (RFC 9068) bound to the resource server, with only its scopes', async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'calendar:read notes:read' });
    const config = await clientFor(server, agent);
    const tokens = await client.clientCredentialsGrant(config, { scope: 'calendar:read notes:read', resource: CALENDAR_API });
    const [h, c, sig] = tokens.access_token.split('.');
    const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as { typ: string; kid: string; alg: string };
    const claims = JSON.parse(Buffer.from(c!, 'base64url').toString()) as {
      aud: string;
      scope: string;
      client_id: string;
      exp: number;
      iat: number;
      iss: string;
    };
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'ES256');
    assert.equal(claims.aud, CALENDAR_API);
    assert.equal(claims.scope, 'calendar:read');
    assert.equal(claims.iss, server.issuer);
    assert.equal(claims.client_id, agent.clientId);
    assert.ok(claims.exp - claims.iat <= 300);
    const jwks = (await (await fetch(`${server.issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    const key = createPublicKey({ key: jwks.keys.find((k) => k.kid === header.kid) as never, format: 'jwk' });
    assert.ok(verify('sha256', Buffer.from(`${h}.${c}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig!, 'base64url')));
  });

  it("lets only the token's own client or its resource server introspect it", async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read notes:write' });
    const config = await clientFor(server, agent);
    const tokens = await client.clientCredentialsGrant(config, { scope: 'notes:read', resource: NOTES_API });
    assert.equal(tokens.access_token.split('.').length, 1, 'opaque');
    const byNotes = await client.tokenIntrospection(notesClient, tokens.access_token);
    assert.equal(byNotes.active, true);
    assert.equal(byNotes.aud, NOTES_API);
    assert.equal(byNotes.scope, 'notes:read');
    assert.equal(byNotes.client_id, agent.clientId);
    assert.deepEqual(await client.tokenIntrospection(calendarClient, tokens.access_token), { active: false }, 'another resource server');
    const stranger = await clientFor(server, await createAgent(server, { grantTypes: ['client_credentials'] }));
    assert.deepEqual(await client.tokenIntrospection(stranger, tokens.access_token), { active: false }, 'an unrelated client');
  });

  it('R-61: introspection needs client authentication; an active answer has the RFC 7662 members, a dead token only active: false', async () => {
    const unauthenticated = await fetch(`${server.issuer}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=x',
    });
    assert.equal(unauthenticated.status, 400);
    assert.equal(((await unauthenticated.json()) as { error: string }).error, 'invalid_request');

    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'notes:read', extra: { resource: NOTES_API } });
    const info = await client.tokenIntrospection(notesClient, tokens.access_token);
    assert.deepEqual(Object.keys(info).sort(), [
      'acr',
      'active',
      'aud',
      'auth_time',
      'client_id',
      'exp',
      'grant_id',
      'iat',
      'iss',
      'scope',
      'sub',
      'token_type',
    ]);
    assert.equal(info.sub, user.id);
    assert.equal(info.token_type, 'Bearer');
    await client.tokenRevocation(config, tokens.access_token);
    assert.deepEqual(await client.tokenIntrospection(notesClient, tokens.access_token), { active: false }, 'revoked');
  });

  it('answers invalid_target for an unknown resource', async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    await assert.rejects(
      client.clientCredentialsGrant(config, { scope: 'notes:read', resource: 'https://unknown.example.com/' }),
      (err: client.ResponseBodyError) => err.error === 'invalid_target',
    );
  });

  it("asks consent per resource server and binds the code flow's token to it", async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read notes:write' });
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, {
      scope: 'notes:read notes:write',
      choice: { untick: ['notes:write https://notes.example.com/'] },
      extra: { resource: NOTES_API },
    });
    const info = await client.tokenIntrospection(notesClient, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.aud, NOTES_API);
    assert.equal(info.scope, 'notes:read');
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!, { resource: NOTES_API });
    assert.equal((await client.tokenIntrospection(notesClient, refreshed.access_token)).scope, 'notes:read');
  });

  it('deletes a resource server, and its tokens are refused from the next request on', async () => {
    const extra = 'https://gone.example.com/';
    assert.equal((await server.cli(['resources', 'create', extra, '--scopes', 'notes:read'])).code, 0);
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    // Served (and remembered by the instance) before the deletion…
    assert.equal((await client.clientCredentialsGrant(config, { scope: 'notes:read', resource: extra })).token_type.toLowerCase(), 'bearer');
    assert.equal((await server.cli(['resources', 'delete', extra])).code, 0);
    assert.equal((await server.cli(['resources', 'show', extra])).code, 1);
    // …forgotten at once after it.
    await assert.rejects(
      client.clientCredentialsGrant(config, { scope: 'notes:read', resource: extra }),
      (err: client.ResponseBodyError) => err.error === 'invalid_target',
    );
  });

  it('issue-13: a grant for two resource servers refreshes for one, then the other', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read calendar:read' });
    const config = await clientFor(server, agent);
    const tokens = await multiResourceTokens(server.issuer, config, user, 'notes:read calendar:read', [NOTES_API, CALENDAR_API]);
    const forCalendar = await client.refreshTokenGrant(config, tokens.refresh_token!, { resource: CALENDAR_API });
    const claims = JSON.parse(Buffer.from(forCalendar.access_token.split('.')[1]!, 'base64url').toString()) as { aud: string; scope: string };
    assert.equal(claims.aud, CALENDAR_API);
    assert.equal(claims.scope, 'calendar:read');
    const forNotes = await client.refreshTokenGrant(config, forCalendar.refresh_token!, { resource: NOTES_API });
    const info = await client.tokenIntrospection(notesClient, forNotes.access_token);
    assert.equal(info.aud, NOTES_API);
    assert.equal(info.scope, 'notes:read');
  });

  it('issue-13: a refresh for an ungranted, unknown or deleted resource is invalid_target and the grant lives', async () => {
    const gone = 'https://retired.example.com/';
    assert.equal((await server.cli(['resources', 'create', gone, '--scopes', 'notes:read'])).code, 0);
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const tokens = await multiResourceTokens(server.issuer, config, user, 'notes:read', [NOTES_API, gone]);
    assert.equal((await server.cli(['resources', 'delete', gone])).code, 0);
    for (const resource of [CALENDAR_API, 'https://unknown.example.com/', gone]) {
      await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!, { resource }), (err: client.ResponseBodyError) => {
        assert.equal(err.error, 'invalid_target', resource);
        return true;
      });
    }
    // Two resources granted and none named, or two named (resource may repeat, RFC 8707 §2): one
    // token is for one server, so both are refused the same way.
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_target');
    const both = new URLSearchParams([
      ['resource', NOTES_API],
      ['resource', gone],
    ]);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!, both), (err: client.ResponseBodyError) => err.error === 'invalid_target');
    // The refused refreshes consumed nothing: the same refresh token still works, once.
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!, { resource: NOTES_API });
    assert.equal((await client.tokenIntrospection(notesClient, refreshed.access_token)).active, true);
    await client.refreshTokenGrant(config, refreshed.refresh_token!, { resource: NOTES_API });
    const types = await auditTypes(server, agent.clientId);
    assert.ok(!types.includes('refresh_token.reuse_detected'), types.join(' '));
    assert.ok(!types.includes('grant.revoked'), types.join(' '));
  });

  it('issue-13: with resource=, consent asks each permission once, and the account page lists what the token carries', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { name: 'Notes helper', redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read notes:write' });
    const config = await clientFor(server, agent);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'notes:read notes:write',
      resource: NOTES_API,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback, consentScopes, consentHtml } = await authorize(server.issuer, url, user, { untick: [`notes:write ${NOTES_API}`] });
    assert.deepEqual(consentScopes.sort(), [`notes:read ${NOTES_API}`, `notes:write ${NOTES_API}`]);
    assert.equal(consentHtml.match(/Change your notes/g)?.length, 1, 'asked once');
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: NOTES_API });
    assert.equal((await client.tokenIntrospection(notesClient, tokens.access_token)).scope, 'notes:read');
    const page = (await signInToAccount(server, user)).html;
    assert.match(page, /Read your notes \(at notes\.example\.com\)/);
    assert.doesNotMatch(page, /Change your notes/, 'the account page lists only what the user left ticked');
  });

  it('issue-13: inside the retry window, the previous refresh token repeats only its own request', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read calendar:read', refreshRetryWindow: 60 });
    const config = await clientFor(server, agent);
    const tokens = await multiResourceTokens(server.issuer, config, user, 'notes:read calendar:read', [NOTES_API, CALENDAR_API]);
    const first = await client.refreshTokenGrant(config, tokens.refresh_token!, { resource: CALENDAR_API });
    const retried = await client.refreshTokenGrant(config, tokens.refresh_token!, { resource: CALENDAR_API });
    assert.equal(retried.refresh_token, first.refresh_token, 'the same successor');
    // Asked for another server, the kept answer (a calendar token) would be wrong: refused, not replayed.
    await assert.rejects(
      client.refreshTokenGrant(config, tokens.refresh_token!, { resource: NOTES_API }),
      (err: client.ResponseBodyError) => err.error === 'invalid_grant',
    );
    const next = await client.refreshTokenGrant(config, first.refresh_token!, { resource: NOTES_API });
    assert.equal((await client.tokenIntrospection(notesClient, next.access_token)).aud, NOTES_API, 'the grant lives');
  });

  it("issue-13: a raw client that registered no scope and sends none, naming a resource server, is asked for that server's scopes", async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { public: true, redirectUris: ['http://127.0.0.1/cb'] });
    const verifier = client.randomPKCECodeVerifier();
    const url = new URL(`${server.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: agent.clientId,
      response_type: 'code',
      redirect_uri: 'http://127.0.0.1/cb',
      resource: NOTES_API,
      state: 'raw',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString();
    const { callback, consentScopes } = await authorize(server.issuer, url, user, { untick: [`notes:write ${NOTES_API}`] });
    assert.deepEqual(consentScopes.sort(), [`notes:read ${NOTES_API}`, `notes:write ${NOTES_API}`]);
    const res = await postToken(server.issuer, {
      grant_type: 'authorization_code',
      client_id: agent.clientId,
      code: callback.searchParams.get('code') ?? '',
      redirect_uri: 'http://127.0.0.1/cb',
      code_verifier: verifier,
      resource: NOTES_API,
    });
    const body = (await res.json()) as { access_token: string; scope: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.scope, 'notes:read');
    assert.equal((await client.tokenIntrospection(notesClient, body.access_token)).aud, NOTES_API);
  });
});
