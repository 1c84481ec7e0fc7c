/**
 * The admin HTTP API: everything the CLI does, over HTTP, with named bearer tokens audited as
 * their actor, RFC 6749-style JSON errors, and an OpenAPI 3.1 document that lists exactly the
 * routes that answer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, generateAgentKey } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const DEPLOY_TOKEN = randomBytes(32).toString('base64url');
const REDIRECT_URI = 'http://127.0.0.1/cb';

interface OpenApi {
  openapi: string;
  paths: Record<string, Record<string, { operationId: string; requestBody?: unknown; parameters: { name: string; in: string }[] }>>;
}

describe('the admin API', () => {
  let server: TestServer;
  const call = async (method: string, path: string, body?: unknown, token = ADMIN_TOKEN) => {
    const res = await fetch(`${server.issuer}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* JSON lines or text */
    }
    return { status: res.status, headers: res.headers, body: parsed as Record<string, unknown> };
  };

  before(async () => {
    server = await startServer({ ADMIN_TOKEN, ADMIN_TOKENS: `deploy-bot:${DEPLOY_TOKEN}` });
  });
  after(() => server?.stop());

  it('refuses a missing or wrong token with 401 and a Bearer challenge, everywhere under /admin', async () => {
    for (const path of ['/admin/clients', '/admin/openapi.json', '/admin/audit']) {
      for (const token of ['', 'x'.repeat(43), `${ADMIN_TOKEN}x`]) {
        const res = await fetch(`${server.issuer}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
        assert.equal(res.status, 401, `${path} with ${token ? 'a wrong' : 'no'} token`);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="agentauth-admin"/);
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_token');
      }
    }
  });

  it('does everything the CLI does: scopes, clients, users, their grants, revocation, events, keys', async () => {
    assert.equal((await call('POST', '/admin/scopes', { name: 'notes:read', description: 'Read your notes' })).status, 200);
    const scopes = (await call('GET', '/admin/scopes')).body.scopes as { name: string; description: string }[];
    assert.deepEqual(
      scopes.map(({ name, description }) => ({ name, description })),
      [{ name: 'notes:read', description: 'Read your notes' }],
    );

    const key = await generateAgentKey();
    const created = await call(
      'POST',
      '/admin/clients',
      { name: 'Notes agent', redirectUris: [REDIRECT_URI], jwks: { keys: [key.publicJwk] }, scope: 'notes:read' },
      DEPLOY_TOKEN,
    );
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const clientId = String(created.body.client_id);
    assert.equal((await call('GET', `/admin/clients/${clientId}`)).body.client_name, 'Notes agent');
    const renamed = await call('PATCH', `/admin/clients/${clientId}`, { name: 'Notes agent 2' });
    assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
    assert.equal(renamed.body.client_name, 'Notes agent 2');
    assert.ok(((await call('GET', '/admin/clients')).body.clients as { client_id: string }[]).some((c) => c.client_id === clientId));
    // Delegation (RFC 8693): who the agent may hand its users' tokens to, as with --delegate-to.
    const delegate = await call('POST', '/admin/clients', {
      name: 'Coding agent',
      grantTypes: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      jwks: { keys: [(await generateAgentKey()).publicJwk] },
    });
    assert.equal(delegate.status, 201, JSON.stringify(delegate.body));
    const delegated = await call('PATCH', `/admin/clients/${clientId}`, { delegates: [delegate.body.client_id] });
    assert.equal(delegated.status, 200, JSON.stringify(delegated.body));
    assert.deepEqual((await call('GET', `/admin/clients/${clientId}`)).body.delegates, [delegate.body.client_id]);
    assert.equal((await call('PATCH', `/admin/clients/${clientId}`, { delegates: [] })).status, 200);
    assert.deepEqual((await call('GET', `/admin/clients/${clientId}`)).body.delegates, []);

    const user = { username: `alice-${randomBytes(3).toString('hex')}`, password: randomBytes(12).toString('base64url') };
    const made = await call('POST', '/admin/users', user);
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const config = await clientFor(server, { clientId, metadata: {}, privateKey: key.privateKey, kid: key.publicJwk.kid });
    const tokens = await codeFlowTokens(server.issuer, config, { id: String(made.body.id), ...user }, { scope: 'notes:read', redirectUri: REDIRECT_URI });

    const grants = (await call('GET', `/admin/users/${user.username}/grants`)).body.grants as {
      grant_id: string;
      client_id: string;
      client_name: string;
      scopes: string[];
    }[];
    assert.equal(grants.length, 1);
    assert.equal(grants[0]!.client_id, clientId);
    assert.equal(grants[0]!.client_name, 'Notes agent 2');
    assert.deepEqual(grants[0]!.scopes, ['notes:read']);

    const revoked = await call('DELETE', `/admin/grants/${grants[0]!.grant_id}`, undefined, DEPLOY_TOKEN);
    assert.deepEqual(revoked.body, { grant_id: grants[0]!.grant_id, revoked: true });
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!));
    assert.equal((await call('DELETE', `/admin/grants/${grants[0]!.grant_id}`)).status, 404, 'a dead grant is not found');
    assert.deepEqual((await call('GET', `/admin/users/${user.username}/grants`)).body.grants, []);

    assert.ok(Array.isArray((await call('GET', '/admin/events?pending=true')).body.events));
    const rotated = await call('POST', '/admin/keys/rotate');
    assert.equal(rotated.status, 200);
    const jwks = (await (await fetch(`${server.issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    assert.ok(
      jwks.keys.some((k) => k.kid === rotated.body.kid),
      'the new key is published at once',
    );
    assert.equal((await call('POST', '/admin/audit/verify')).body.ok, true);
    assert.equal((await call('POST', '/admin/audit/purge', { before: '2000-01-01T00:00:00Z' })).body.purged, 0);
    const token = await call('POST', '/admin/registration-tokens', { expiresIn: 3600, uses: 1 });
    assert.equal(token.status, 201);
    assert.equal(typeof token.body.token, 'string');
    assert.equal((await call('POST', `/admin/users/${user.username}/disable`)).body.disabled, true);
    assert.equal((await call('POST', `/admin/clients/${clientId}/disable`)).body.disabled, true);
    assert.equal((await call('DELETE', `/admin/clients/${clientId}`)).body.deleted, true);

    const api = 'https://notes-api.example.com/';
    assert.equal((await call('POST', '/admin/resources', { identifier: api, scopes: ['notes:read'] })).status, 201);
    assert.equal((await call('GET', `/admin/resources/${encodeURIComponent(api)}`)).body.identifier, api);
    assert.equal(Array.isArray((await call('GET', '/admin/resources')).body.resources), true);
    assert.equal((await call('DELETE', `/admin/resources/${encodeURIComponent(api)}`)).body.deleted, true);
  });

  it('audits each act with the name of the token that did it', async () => {
    const lines = (await call('GET', '/admin/audit')).body as unknown as string;
    const rows = String(lines)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event_type: string; actor_type: string; actor_id: string });
    assert.equal(rows.find((r) => r.event_type === 'client.registered')?.actor_id, 'deploy-bot');
    assert.equal(rows.find((r) => r.event_type === 'scope.created')?.actor_id, 'admin');
    const revoked = rows.find((r) => r.event_type === 'grant.revoked' && r.actor_id === 'deploy-bot');
    assert.equal(revoked?.actor_type, 'admin');
  });

  it('answers bad input with RFC 6749-style JSON: 400, 404, 405, 413, 415; never a 500', async () => {
    const cases: [string, string, unknown, number, string, RegExp?][] = [
      ['POST', '/admin/scopes', { name: 'has space', description: 'x' }, 400, 'invalid_request', /name/],
      ['POST', '/admin/scopes', { name: 'a' }, 400, 'invalid_request', /description/],
      ['POST', '/admin/clients', { name: 'Bad redirect', public: true, redirectUris: ['http://evil.example/cb'] }, 400, 'invalid_redirect_uri', /redirect URI/],
      // Registration refusals carry RFC 7591's codes, by the admin API as by dynamic registration.
      ['POST', '/admin/clients', { name: 'No keys', redirectUris: [REDIRECT_URI] }, 400, 'invalid_client_metadata', /exactly one of/],
      ['GET', '/admin/clients/agt_nope', undefined, 404, 'not_found', /no client agt_nope/],
      ['PATCH', '/admin/clients/agt_nope', { name: 'x' }, 404, 'not_found'],
      ['GET', '/admin/users/nobody/grants', undefined, 404, 'not_found', /no user nobody/],
      ['DELETE', '/admin/grants/nope', undefined, 404, 'not_found'],
      ['GET', '/admin/nothing-here', undefined, 404, 'not_found'],
      ['PUT', '/admin/clients', { name: 'x' }, 405, 'invalid_request', /GET or POST/],
    ];
    for (const [method, path, body, status, error, description] of cases) {
      const res = await call(method, path, body);
      assert.equal(res.status, status, `${method} ${path}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error, error, `${method} ${path}`);
      if (description) assert.match(String(res.body.error_description), description, `${method} ${path}`);
    }
    const notJson = await fetch(`${server.issuer}/admin/scopes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: '{"name":',
    });
    assert.equal(notJson.status, 400);
    const wrongType = await fetch(`${server.issuer}/admin/scopes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'text/plain' },
      body: 'name=x',
    });
    assert.equal(wrongType.status, 415);
    const huge = await fetch(`${server.issuer}/admin/scopes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x', description: 'y'.repeat(300 * 1024) }),
    });
    assert.equal(huge.status, 413);
    assert.doesNotMatch(server.output(), /"level":50/);
  });

  it('publishes an OpenAPI 3.1 document listing exactly the routes that answer', async () => {
    const doc = (await call('GET', '/admin/openapi.json')).body as unknown as OpenApi;
    assert.equal(doc.openapi, '3.1.0');
    const documented = Object.entries(doc.paths)
      .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    // Every documented route is routed: with a placeholder for each path parameter it answers
    // something other than the fallback's "no such route" (405/404 from the fallback say not_found
    // or name the allowed methods).
    for (const entry of documented) {
      const [method, template] = entry.split(' ') as [string, string];
      const path = template.replace(/\{\w+\}/g, 'placeholder');
      const res = await call(method, path, method === 'GET' || method === 'DELETE' ? undefined : {});
      assert.notEqual(res.status, 405, entry);
      assert.ok(res.status !== 404 || /^no /.test(String(res.body.error_description)), `${entry} is routed (${res.status} ${JSON.stringify(res.body)})`);
      assert.ok(res.status < 500, entry);
    }
    // And nothing undocumented answers: the CLI's operations all have a route.
    assert.equal(documented.length, 26);
    for (const op of Object.values(doc.paths).flatMap((m) => Object.values(m))) {
      for (const p of op.parameters.filter((x) => x.in === 'path')) assert.ok(p.name);
    }
    const createClient = doc.paths['/admin/clients']!.post!.requestBody as {
      content: { 'application/json': { schema: { properties: Record<string, unknown>; required: string[] } } };
    };
    assert.ok(createClient.content['application/json'].schema.properties.redirectUris, "bodies are the operations' own schemas");
    assert.deepEqual(createClient.content['application/json'].schema.required, ['name']);
  });
});

describe('the same operations from the CLI', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it("users grants lists a user's grants and grants revoke kills one, audited as the command line", async () => {
    await server.cli(['scopes', 'create', 'notes:read', '--description', 'Read your notes']);
    const key = await generateAgentKey();
    const jwksFile = join(mkdtempSync(join(tmpdir(), 'agentauth-admin-')), 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [key.publicJwk] }));
    const made = JSON.parse(
      (
        await server.cli([
          'clients',
          'create',
          '--name',
          'CLI agent',
          '--redirect-uri',
          REDIRECT_URI,
          '--jwks-file',
          jwksFile,
          '--scope',
          'notes:read',
          '--json',
        ])
      ).stdout,
    ) as { client_id: string };
    const user = { username: `bob-${randomBytes(3).toString('hex')}`, password: randomBytes(12).toString('base64url') };
    const created = JSON.parse((await server.cli(['users', 'create', user.username, '--password-stdin', '--json'], user.password)).stdout) as { id: string };
    const config = await clientFor(server, { clientId: made.client_id, metadata: {}, privateKey: key.privateKey, kid: key.publicJwk.kid });
    const tokens = await codeFlowTokens(server.issuer, config, { id: created.id, ...user }, { scope: 'notes:read', redirectUri: REDIRECT_URI });

    const listed = await server.cli(['users', 'grants', user.username]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /\tCLI agent\tnotes:read\t/);
    const grantId = listed.stdout.split('\t')[0]!;
    const revoked = await server.cli(['grants', 'revoke', grantId]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    assert.equal((await server.cli(['users', 'grants', user.username])).stdout.trim(), 'no live grants');
    const again = await server.cli(['grants', 'revoke', grantId]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no live grant/);
    const audit = JSON.parse((await server.cli(['audit', 'export', '--user', user.username, '--json'])).stdout) as {
      events: { event_type: string; actor_id: string; details: { reason?: string } }[];
    };
    const row = audit.events.find((e) => e.event_type === 'grant.revoked');
    assert.equal(row?.actor_id, 'cli');
    assert.equal(row?.details.reason, 'admin_revoked');
  });
});

describe('without an admin token', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('has no admin API at all', async () => {
    for (const path of ['/admin/clients', '/admin/openapi.json', '/admin/audit']) {
      assert.equal((await fetch(`${server.issuer}${path}`, { headers: { authorization: 'Bearer anything-at-all-anything-at-all-123' } })).status, 404, path);
    }
  });
});
