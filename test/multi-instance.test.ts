/**
 * Two server processes sharing PostgreSQL and Redis behind a round-robin proxy: a flow whose
 * requests alternate between them works, rotation state is shared, and a change made by the CLI
 * is seen by every instance at once. Needs real services: skipped on the embedded default.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { codeFlowTokens, postToken } from './helpers/browserless.ts';
import { clientAssertion, generateTestKey } from './helpers/jwt.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { loseDeploymentRedis, REAL_SERVICES } from './helpers/server.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const skip = REAL_SERVICES ? false : 'needs two server processes on real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)';

describe('two instances on one PostgreSQL and Redis', { skip }, () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startCluster(2);
  });
  after(() => cluster?.stop());

  it('runs a whole flow across both, and a refresh token two rotations old fails on either', async () => {
    await createScope(cluster, 'tasks:read', 'See your tasks');
    const user = await createUser(cluster);
    const agent = await createAgent(cluster, { redirectUris: ['http://127.0.0.1/cb'], scope: 'tasks:read' });
    const config = await clientFor(cluster, agent);
    const tokens = await codeFlowTokens(cluster.issuer, config, user, { scope: 'tasks:read' });
    const second = await client.refreshTokenGrant(config, tokens.refresh_token!);
    const refreshed = await client.refreshTokenGrant(config, second.refresh_token!);
    // Two rotations old: reuse, refused by either instance, and the family is dead.
    for (let i = 0; i < 2; i++) {
      await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    }
    assert.equal((await client.tokenIntrospection(config, refreshed.access_token)).active, false);
  });

  it('accepts one client assertion sent 20 times at once across both instances exactly once', async () => {
    const key = generateTestKey('ES256');
    const agent = await createAgent(cluster, { grantTypes: ['client_credentials'], jwks: { keys: [key.publicJwk] } });
    const assertion = clientAssertion(key, agent.clientId, cluster.issuer);
    const body = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion };
    const statuses = (await Promise.all(Array.from({ length: 20 }, () => postToken(cluster.issuer, body)))).map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
    assert.ok(
      statuses.every((s) => s === 200 || s === 401),
      statuses.join(','),
    );
  });

  it('does not accept an earlier assertion again after Redis loses its data', async () => {
    const key = generateTestKey('ES256');
    const agent = await createAgent(cluster, { grantTypes: ['client_credentials'], jwks: { keys: [key.publicJwk] } });
    const body = {
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: clientAssertion(key, agent.clientId, cluster.issuer),
    };
    assert.equal((await postToken(cluster.issuer, body)).status, 200);
    await loseDeploymentRedis(cluster.env);
    assert.equal((await postToken(cluster.issuer, body)).status, 401);
  });

  it('gives the same successor to a refresh retried on the other instance', async () => {
    const user = await createUser(cluster);
    const agent = await createAgent(cluster, { redirectUris: ['http://127.0.0.1/cb'], scope: 'tasks:read' });
    const config = await clientFor(cluster, agent);
    const tokens = await codeFlowTokens(cluster.issuer, config, user, { scope: 'tasks:read' });
    // Consecutive requests alternate between the instances behind the proxy.
    const answers: client.TokenEndpointResponse[] = [];
    for (let i = 0; i < 4; i++) answers.push(await client.refreshTokenGrant(config, tokens.refresh_token!));
    assert.equal(new Set(answers.map((a) => a.refresh_token)).size, 1);
    const both = await Promise.allSettled(Array.from({ length: 10 }, () => client.refreshTokenGrant(config, answers[0]!.refresh_token!)));
    const successors = new Set(both.map((b) => (b.status === 'fulfilled' ? b.value.refresh_token : 'failed')));
    assert.equal(successors.size, 1, `one successor across instances: ${[...successors].join(', ')}`);
  });

  it('shows a scope created by the CLI on every instance at once', async () => {
    const r = await cluster.cli(['scopes', 'create', 'tasks:write', '--description', 'Change your tasks', '--json']);
    assert.equal(r.code, 0, r.stderr);
    for (const instance of cluster.instances) {
      const m = (await (await fetch(`${instance}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
      assert.ok(m.scopes_supported.includes('tasks:write'), instance);
    }
  });

  it('refuses a deleted resource server on every instance from the next request on', async () => {
    const identifier = 'https://tasks-api.example.com/';
    assert.equal((await cluster.cli(['resources', 'create', identifier, '--scopes', 'tasks:read'])).code, 0);
    const agent = await createAgent(cluster, { grantTypes: ['client_credentials'], scope: 'tasks:read' });
    const config = await clientFor(cluster, agent);
    // Requests alternate between the instances: both have served (and cached) the resource server.
    for (let i = 0; i < 2; i++) await client.clientCredentialsGrant(config, { scope: 'tasks:read', resource: identifier });
    assert.equal((await cluster.cli(['resources', 'delete', identifier])).code, 0);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        client.clientCredentialsGrant(config, { scope: 'tasks:read', resource: identifier }),
        (err: client.ResponseBodyError) => err.error === 'invalid_target',
      );
    }
  });

  it('publishes a rotated key from every instance without a restart', async () => {
    const r = await cluster.cli(['keys', 'rotate', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { kid } = JSON.parse(r.stdout) as { kid: string };
    for (const instance of cluster.instances) {
      const jwks = (await (await fetch(`${instance}/jwks`)).json()) as { keys: { kid: string }[] };
      assert.ok(
        jwks.keys.some((k) => k.kid === kid),
        instance,
      );
      assert.ok(jwks.keys.length >= 2);
    }
  });
});
