/**
 * RFC 7591 registration and RFC 7592 management (SECURITY-TESTS R-64..R-66, W-08): initial access
 * tokens gate registration and are used up atomically; every resulting client passes the policy
 * or gets invalid_redirect_uri / invalid_client_metadata naming the field; registration access
 * tokens rotate, cannot reach other clients, and cannot revive a disabled one; open registration
 * admits public clients only and shows them to users as unverified.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, postToken } from './helpers/browserless.ts';
import { createScope, createUser } from './helpers/factories.ts';
import { clientAssertion, generateTestKey } from './helpers/jwt.ts';
import { startServer, type TestServer } from './helpers/server.ts';

interface Registered extends Record<string, unknown> {
  client_id: string;
  registration_access_token: string;
  registration_client_uri: string;
}

async function registrationToken(server: TestServer, ...flags: string[]): Promise<string> {
  const r = await server.cli(['registration-tokens', 'create', ...flags, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

function register(server: TestServer, body: Record<string, unknown>, token?: string): Promise<Response> {
  return fetch(`${server.issuer}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

const manage = (uri: string, token: string, method: 'GET' | 'PUT' | 'DELETE', body?: Record<string, unknown>) =>
  fetch(uri, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });

const clientCount = async (server: TestServer) =>
  (JSON.parse((await server.cli(['clients', 'list', '--json'])).stdout) as { clients: unknown[] }).clients.length;

describe('dynamic client registration with initial access tokens', () => {
  let server: TestServer;
  let token: string;
  const key = generateTestKey('ES256');
  const confidential = () => ({
    client_name: 'Registered agent',
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [key.publicJwk] },
    scope: 'tasks:read',
  });

  before(async () => {
    // This file registers many clients from one address; the per-IP limit has its own test.
    server = await startServer({ REGISTRATION_RATE_LIMIT: '1000' });
    await createScope(server, 'tasks:read', 'See your tasks');
    token = await registrationToken(server, '--expires-in', '1h');
  });
  after(() => server?.stop());

  it('issue-13: a registration without token_endpoint_auth_method or keys is told about the method it left out', async () => {
    const { token_endpoint_auth_method: _method, jwks: _jwks, ...bare } = confidential();
    const res = await register(server, bare, await registrationToken(server));
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'invalid_client_metadata');
    assert.match(body.error_description, /token_endpoint_auth_method was not sent/);
  });

  it('R-64: refuses registration without a valid initial access token', async () => {
    for (const presented of [undefined, 'iat_not-a-real-token', `${token}x`]) {
      const res = await register(server, confidential(), presented);
      assert.equal(res.status, 401, String(presented));
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token');
      assert.match(res.headers.get('www-authenticate') ?? '', /invalid_token/);
    }
  });

  it('R-64: a single-use token registers exactly one client, even when sent twice at once', async () => {
    const once = await registrationToken(server, '--uses', '1');
    const results = await Promise.all([register(server, confidential(), once), register(server, confidential(), once)]);
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 401]);
    assert.equal((await register(server, confidential(), once)).status, 401);
  });

  it('registers a private_key_jwt agent that can then authenticate, and audits it', async () => {
    const res = await register(server, confidential(), token);
    assert.equal(res.status, 201);
    const created = (await res.json()) as Registered;
    assert.match(created.client_id, /^agt_/);
    assert.ok(created.registration_access_token && created.registration_client_uri);
    const tokenResponse = await postToken(server.issuer, {
      grant_type: 'client_credentials',
      scope: 'tasks:read',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion(key, created.client_id, server.issuer),
    });
    assert.equal(tokenResponse.status, 200);
    const events = JSON.parse((await server.cli(['audit', 'export', '--client', created.client_id, '--json'])).stdout).events as {
      event_type: string;
      details: { registration?: string };
    }[];
    assert.ok(events.some((e) => e.event_type === 'client.registered' && e.details.registration === 'token'));
  });

  it('R-66: checks the resulting client and names the field it refuses', async () => {
    const publicApp = {
      client_name: 'App',
      redirect_uris: ['https://app.example/cb'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
    };
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...publicApp, redirect_uris: ['http://evil.example/cb'] }, 'invalid_redirect_uri', /https/],
      [{ ...publicApp, redirect_uris: ['https://rp.example@evil.example/cb'] }, 'invalid_redirect_uri', /userinfo/],
      [{ ...publicApp, redirect_uris: ['https://*.example.com/cb'] }, 'invalid_redirect_uri', /wildcard/],
      [{ ...publicApp, redirect_uris: ['https://app.example/cb#x'] }, 'invalid_redirect_uri', /fragment/],
      // A loopback redirect makes a client native unless it says it is a web app (see below).
      [{ ...publicApp, application_type: 'web', redirect_uris: ['http://127.0.0.1/cb'] }, 'invalid_redirect_uri', /native/],
      [{ ...publicApp, redirect_uris: ['http://127.0.0.1/cb', 'https://app.example/cb'] }, 'invalid_redirect_uri', /native/],
      [{ ...publicApp, logo_uri: 'http://127.0.0.1:6379/x' }, 'invalid_client_metadata', /logo_uri/],
      [{ ...publicApp, logo_uri: 'https://10.0.0.1/logo.png' }, 'invalid_client_metadata', /logo_uri/],
      [{ ...publicApp, policy_uri: 'https://user:pw@app.example/policy' }, 'invalid_client_metadata', /policy_uri/],
      [{ ...publicApp, client_name: 'x'.repeat(50_000) }, 'invalid_client_metadata', /client_name/],
      [{ ...publicApp, client_name: 'Safe\u202eexe.gnp' }, 'invalid_client_metadata', /client_name/],
      [{ ...publicApp, scope: 'admin:everything' }, 'invalid_client_metadata', /scope/],
      [{ ...publicApp, token_endpoint_auth_method: 'client_secret_basic' }, 'invalid_client_metadata', /token_endpoint_auth_method/],
      [{ ...publicApp, grant_types: ['authorization_code', 'client_credentials'] }, 'invalid_client_metadata', /client_credentials/],
      [{ ...confidential(), jwks_uri: 'https://agent.example/jwks' }, 'invalid_client_metadata', /jwks/],
      [{ ...confidential(), jwks: undefined, jwks_uri: 'https://169.254.169.254/latest/meta-data/' }, 'invalid_client_metadata', /jwks_uri/],
      [{ ...confidential(), token_endpoint_auth_signing_alg: 'HS256' }, 'invalid_client_metadata', /token_endpoint_auth_signing_alg/],
    ];
    const before = await clientCount(server);
    for (const [body, error, description] of cases) {
      const res = await register(server, body, token);
      const answer = (await res.json()) as { error: string; error_description: string };
      assert.equal(res.status, 400, `${JSON.stringify(body).slice(0, 120)}: ${res.status} ${JSON.stringify(answer)}`);
      assert.equal(answer.error, error, JSON.stringify(answer));
      assert.match(answer.error_description, description, JSON.stringify(answer));
    }
    assert.equal(await clientCount(server), before, 'no refused client was stored');
    // An XSS-shaped name is only text: accepted here, escaped wherever it is shown.
    assert.equal((await register(server, { ...publicApp, client_name: '<img src=x onerror=alert(1)>' }, token)).status, 201);
  });

  it('R-65: manages a client with its rotating registration access token, and nothing else', async () => {
    const a = (await (await register(server, confidential(), token)).json()) as Registered;
    const b = (await (await register(server, confidential(), token)).json()) as Registered;

    const read = await manage(a.registration_client_uri, a.registration_access_token, 'GET');
    assert.equal(read.status, 200);
    assert.equal(((await read.json()) as Registered).client_id, a.client_id);
    assert.equal((await manage(a.registration_client_uri, b.registration_access_token, 'GET')).status, 401, "another client's token");
    // A token presented for another client is destroyed: b must ask an admin from now on.
    assert.equal((await manage(b.registration_client_uri, b.registration_access_token, 'GET')).status, 401, 'misused token is dead');

    const current = { ...confidential(), client_id: a.client_id };
    const downgrade = await manage(a.registration_client_uri, a.registration_access_token, 'PUT', {
      ...current,
      token_endpoint_auth_method: 'none',
      jwks: undefined,
    });
    assert.equal(downgrade.status, 400);
    assert.match(((await downgrade.json()) as { error_description: string }).error_description, /token_endpoint_auth_method cannot change/);
    const badRedirect = await manage(a.registration_client_uri, a.registration_access_token, 'PUT', {
      ...current,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://evil.example/cb'],
    });
    assert.equal(badRedirect.status, 400);

    const renamed = await manage(a.registration_client_uri, a.registration_access_token, 'PUT', { ...current, client_name: 'Renamed by itself' });
    assert.equal(renamed.status, 200);
    const renamedBody = (await renamed.json()) as Registered;
    assert.equal(renamedBody.client_name, 'Renamed by itself');
    assert.notEqual(renamedBody.registration_access_token, a.registration_access_token, 'rotated');
    assert.equal((await manage(a.registration_client_uri, a.registration_access_token, 'GET')).status, 401, 'the old token is dead');
    const rat = renamedBody.registration_access_token;

    assert.equal((await server.cli(['clients', 'disable', a.client_id])).code, 0);
    assert.equal(
      (await manage(a.registration_client_uri, rat, 'PUT', { ...current, client_name: 'Back again' })).status,
      401,
      'a disabled client cannot revive itself',
    );

    const c = (await (await register(server, confidential(), token)).json()) as Registered;
    const removed = await manage(c.registration_client_uri, c.registration_access_token, 'DELETE');
    assert.equal(removed.status, 204);
    assert.equal((await server.cli(['clients', 'show', c.client_id])).code, 1);
    const afterDelete = await postToken(server.issuer, {
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion(key, c.client_id, server.issuer),
    });
    assert.equal(afterDelete.status, 401);
  });
});

describe('open registration (OPEN_REGISTRATION=true)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ OPEN_REGISTRATION: 'true' });
    await createScope(server, 'notes:read', 'Read your notes', { allowUnverified: true });
    await createScope(server, 'admin:all', 'Administer everything');
  });
  after(() => server?.stop());

  it('admits public clients without a token, and nothing else', async () => {
    const key = generateTestKey('ES256');
    const confidential = await register(server, {
      redirect_uris: ['https://app.example/cb'],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [key.publicJwk] },
    });
    assert.equal(confidential.status, 400);
    assert.match(((await confidential.json()) as { error_description: string }).error_description, /self-registered clients are public clients only/);
    const machine = await register(server, { grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'none' });
    assert.equal(machine.status, 400);
    const ok = await register(server, {
      client_name: 'Some MCP client',
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      token_endpoint_auth_method: 'none',
      scope: 'notes:read',
    });
    assert.equal(ok.status, 201);
    // MCP hosts leave application_type out: a loopback-only client is then registered as native.
    const unsaid = await register(server, {
      client_name: 'Another MCP client',
      redirect_uris: ['http://127.0.0.1:33418/callback'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(unsaid.status, 201);
    assert.equal(((await unsaid.json()) as { application_type: string }).application_type, 'native');
  });

  it('issue-13: open registration without token_endpoint_auth_method registers a public client', async () => {
    const res = await register(server, { client_name: 'Raw client', redirect_uris: ['http://127.0.0.1/callback'], scope: 'notes:read' });
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal(((await res.json()) as { token_endpoint_auth_method: string }).token_endpoint_auth_method, 'none');
    // A method other than none is refused by the field the client sent, whatever else is missing.
    const keyless = await register(server, { redirect_uris: ['http://127.0.0.1/callback'], token_endpoint_auth_method: 'private_key_jwt' });
    assert.equal(keyless.status, 400);
    assert.match(((await keyless.json()) as { error_description: string }).error_description, /^token_endpoint_auth_method must be none/);
  });

  it('issue-14: a self-registered client cannot register for, nor ask for, a scope not opened to unverified clients', async () => {
    const listed = JSON.parse((await server.cli(['scopes', 'list', '--json'])).stdout) as { scopes: { name: string; allow_unverified: boolean }[] };
    assert.deepEqual(
      listed.scopes.map((s) => [s.name, s.allow_unverified]),
      [
        ['admin:all', false],
        ['notes:read', true],
      ],
    );
    const lookAlike = { client_name: 'Agent A', application_type: 'native', redirect_uris: ['http://127.0.0.1/callback'], token_endpoint_auth_method: 'none' };
    const refused = await register(server, { ...lookAlike, scope: 'notes:read admin:all' });
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error_description: string }).error_description, /admin:all, which self-registered clients may not request/);
    // Registered without a scope, it is held to the open ones when it asks.
    const created = (await (await register(server, lookAlike)).json()) as Registered;
    const config = await client.discovery(new URL(server.issuer), created.client_id, undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const ask = async (scope: string) => {
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: 'http://127.0.0.1/callback',
        scope,
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
      });
      return new URL((await fetch(url, { redirect: 'manual' })).headers.get('location') ?? '', server.issuer);
    };
    const denied = await ask('admin:all');
    assert.equal(denied.searchParams.get('error'), 'invalid_scope');
    assert.match((await ask('notes:read')).pathname, /^\/interaction\//);
    // Closing a scope holds clients that registered while it was open.
    await createScope(server, 'notes:read', 'Read your notes');
    assert.equal((await ask('notes:read')).searchParams.get('error'), 'invalid_scope');
    await createScope(server, 'notes:read', 'Read your notes', { allowUnverified: true });
  });

  it('W-08: tells the user on the consent page that the agent is unverified, and where it will send them', async () => {
    const res = await register(server, {
      client_name: 'Totally Official Bank',
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      token_endpoint_auth_method: 'none',
      scope: 'notes:read',
    });
    const created = (await res.json()) as Registered;
    const user = await createUser(server);
    const config = await client.discovery(new URL(server.issuer), created.client_id, undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1:5555/callback',
      scope: 'notes:read',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { consentHtml, callback } = await authorize(server.issuer, url, user);
    assert.match(consentHtml, /Unverified agent/);
    assert.match(consentHtml, /sent to <strong>127\.0\.0\.1:5555<\/strong>/);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
    assert.equal(tokens.scope, 'notes:read');
  });
});
