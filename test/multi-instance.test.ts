/**
 * Two server processes sharing PostgreSQL and Redis behind a round-robin proxy: a flow whose
 * requests alternate between them works, rotation state is shared, and a change made by the CLI
 * is seen by every instance at once. Needs real services: skipped on the embedded default.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize } from './helpers/browserless.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { REAL_SERVICES } from './helpers/server.ts';

const skip = REAL_SERVICES ? false : 'needs two server processes on real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)';

describe('two instances on one PostgreSQL and Redis', { skip }, () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startCluster(2);
  });
  after(() => cluster?.stop());

  it('runs a whole flow across both, and a rotated refresh token fails on either', async () => {
    await createScope(cluster, 'tasks:read', 'See your tasks');
    const user = await createUser(cluster);
    const agent = await createAgent(cluster, { redirectUris: ['http://127.0.0.1/cb'], scope: 'tasks:read' });
    const config = await clientFor(cluster, agent);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb', scope: 'tasks:read', code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const { callback } = await authorize(cluster.issuer, url, user);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    }
    assert.equal((await client.tokenIntrospection(config, refreshed.access_token)).active, false);
  });

  it('shows a scope created by the CLI on every instance at once', async () => {
    const r = await cluster.cli(['scopes', 'create', 'tasks:write', '--description', 'Change your tasks', '--json']);
    assert.equal(r.code, 0, r.stderr);
    for (const instance of cluster.instances) {
      const m = (await (await fetch(`${instance}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
      assert.ok(m.scopes_supported.includes('tasks:write'), instance);
    }
  });

  it('publishes a rotated key from every instance without a restart', async () => {
    const r = await cluster.cli(['keys', 'rotate', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { kid } = JSON.parse(r.stdout) as { kid: string };
    for (const instance of cluster.instances) {
      const jwks = (await (await fetch(`${instance}/jwks`)).json()) as { keys: { kid: string }[] };
      assert.equal(jwks.keys[0]!.kid, kid, instance);
      assert.ok(jwks.keys.length >= 2);
    }
  });
});
