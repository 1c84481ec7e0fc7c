/**
 * client_credentials with private_key_jwt, the token endpoint's refusals, introspection and
 * revocation boundaries between clients, and tokens kept only as hashes at rest.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import pg from 'pg';
import { postToken } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';

describe('client_credentials and the token endpoint', () => {
  let server: TestServer;
  let agent: TestAgent;
  let other: TestAgent;
  let config: client.Configuration;
  let otherConfig: client.Configuration;
  let publicAgent: TestAgent;

  before(async () => {
    server = await startServer();
    await createScope(server, 'reports:generate', 'Generate reports');
    agent = await createAgent(server, { name: 'Report bot', grantTypes: ['client_credentials'], scope: 'reports:generate' });
    other = await createAgent(server, { name: 'Other bot', grantTypes: ['client_credentials'], scope: 'reports:generate' });
    publicAgent = await createAgent(server, { name: 'Public app', public: true, redirectUris: ['http://127.0.0.1/cb'] });
    config = await clientFor(server, agent);
    otherConfig = await clientFor(server, other);
  });
  after(() => server?.stop());

  it('issues an opaque access token to a private_key_jwt client', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'reports:generate' });
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.equal(tokens.scope, 'reports:generate');
    assert.equal(tokens.refresh_token, undefined);
    assert.equal(tokens.access_token.split('.').length, 1, 'opaque, not a JWT');
    assert.ok(tokens.access_token.length >= 43, 'at least 256 bits of randomness');
    const info = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(info.active, true);
    assert.equal(info.client_id, agent.clientId);
  });

  it('answers token requests with Cache-Control: no-store, errors included', async () => {
    const res = await postToken(server.issuer, { grant_type: 'password', username: 'a', password: 'b', client_id: publicAgent.clientId });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as { error: string; error_description: string };
    assert.equal(body.error, 'unsupported_grant_type');
    assert.equal(typeof body.error_description, 'string');
  });

  it('refuses a client that does not authenticate', async () => {
    const res = await postToken(server.issuer, { grant_type: 'client_credentials', client_id: agent.clientId });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
  });

  it('refuses an assertion replayed a second time', async () => {
    const assertion = await signedAssertion(server, agent);
    assert.equal(
      (await postToken(server.issuer, { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion })).status,
      200,
    );
    const replay = await postToken(server.issuer, {
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: assertion,
    });
    assert.equal(replay.status, 401);
    assert.equal(((await replay.json()) as { error: string }).error, 'invalid_client');
  });

  it('accepts one assertion sent 20 times at once exactly once', async () => {
    const assertion = await signedAssertion(server, agent);
    const body = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion };
    const results = await Promise.all(Array.from({ length: 20 }, () => postToken(server.issuer, body)));
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses.join(',')}`);
    assert.ok(
      statuses.every((s) => s === 200 || s === 401),
      `statuses: ${statuses.join(',')}`,
    );
  });

  it('refuses a grant type the client is not registered for with unauthorized_client', async () => {
    await assert.rejects(
      client.refreshTokenGrant(config, 'not-a-real-token'),
      (err: client.ResponseBodyError) => err.error === 'unauthorized_client' && err.status === 400,
    );
    const res = await postToken(server.issuer, { grant_type: 'client_credentials', client_id: publicAgent.clientId });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: string }).error, 'unauthorized_client');
  });

  it('lets a client introspect only its own tokens', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'reports:generate' });
    const seenByOther = await client.tokenIntrospection(otherConfig, tokens.access_token);
    assert.deepEqual(seenByOther, { active: false });
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, true);
  });

  it('introspection of unknown tokens answers active: false and nothing more', async () => {
    assert.deepEqual(await client.tokenIntrospection(config, 'no-such-token'), { active: false });
  });

  it('revokes an access token; another client cannot revoke it', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'reports:generate' });
    await assert.rejects(client.tokenRevocation(otherConfig, tokens.access_token));
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, true);
    await client.tokenRevocation(config, tokens.access_token);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
  });

  it('stores no token value at rest', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'reports:generate' });
    if (REAL_SERVICES) {
      const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
      await db.connect();
      try {
        for (const table of ['oidc_artifacts', 'grants', 'replay_detection']) {
          const r = await db.query(`SELECT count(*)::int AS n FROM ${table} t WHERE t::text LIKE $1`, [`%${tokens.access_token}%`]);
          assert.equal(r.rows[0].n, 0, `token found in ${table}`);
        }
        const stored = await db.query('SELECT count(*)::int AS n FROM oidc_artifacts WHERE model = $1', ['ClientCredentials']);
        assert.ok(stored.rows[0].n > 0, 'the token is stored, by its hash');
      } finally {
        await db.end();
      }
    } else {
      assert.equal(filesContaining(server.env.DATA_DIR!, tokens.access_token), 0);
    }
  });
});

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A fresh client assertion signed by openid-client's own private_key_jwt code, never sent. */
async function signedAssertion(server: TestServer, agent: TestAgent): Promise<string> {
  const capturing = await clientFor(server, agent);
  let assertion = '';
  capturing[client.customFetch] = async (_url, options) => {
    assertion = new URLSearchParams(String(options.body)).get('client_assertion') ?? '';
    return new Response(JSON.stringify({ error: 'invalid_request' }), { status: 400, headers: { 'content-type': 'application/json' } });
  };
  await assert.rejects(client.clientCredentialsGrant(capturing));
  assert.ok(assertion);
  return assertion;
}

/** How many files under dir contain the needle's bytes (the embedded database's files and WAL). */
function filesContaining(dir: string, needle: string): number {
  let hits = 0;
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    const stat = statSync(file);
    if (stat.isDirectory()) hits += filesContaining(file, needle);
    else if (stat.isFile() && readFileSync(file).includes(needle)) hits++;
  }
  return hits;
}
