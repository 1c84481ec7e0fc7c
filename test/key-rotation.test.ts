/**
 * Issue 14: `agentauth keys rotate` publishes the new key first and signs with it only after a
 * propagation delay, so a resource server whose key set is cached keeps verifying fresh JWTs; the
 * keys it replaces are unpublished after the longest token lifetime. The schedule itself is
 * checked with a controllable clock (no sleeping).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createResourceServer } from 'agentauth/resource-server';
import * as client from 'openid-client';
import { keySchedule } from '../src/keys/signing-keys.ts';
import { clientFor, createAgent, createScope } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const RESOURCE = 'https://notes.example/api';

const kidOf = (jwt: string): string => (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;

describe('signing key rotation', () => {
  let server: TestServer;
  let token: () => Promise<string>;
  const published = async () => ((await (await fetch(`${server.issuer}/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);

  before(async () => {
    server = await startServer();
    await createScope(server, 'notes:read', 'Read your notes');
    const made = await server.cli(['resources', 'create', RESOURCE, '--scopes', 'notes:read', '--token-format', 'jwt']);
    assert.equal(made.code, 0, made.stderr);
    const config = await clientFor(server, await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read' }));
    token = async () => (await client.clientCredentialsGrant(config, { scope: 'notes:read', resource: RESOURCE })).access_token;
  });
  after(() => server?.stop());

  it('issue-14: a JWT signed right after keys rotate verifies at a resource server with a warm cache', async () => {
    const rs = createResourceServer({ issuer: server.issuer, resource: RESOURCE, scopesSupported: ['notes:read'], cacheSeconds: 0 });
    const first = await token();
    await rs.verify(first); // the helper has fetched and cached the key set
    const r = await server.cli(['keys', 'rotate', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rotated = JSON.parse(r.stdout) as { kid: string; signs_from: string; retires_previous_at: string };
    assert.ok(Date.parse(rotated.signs_from) - Date.now() > 10 * 60 * 1000, 'signs after longer than the helper caches keys');
    assert.ok((await published()).includes(rotated.kid), 'the new key is published at once');
    const fresh = await token();
    assert.notEqual(kidOf(fresh), rotated.kid, 'the new key does not sign yet');
    const verified = await rs.verify(fresh, ['notes:read']);
    assert.deepEqual(verified.scopes, ['notes:read']);
  });

  it('issue-14: keys rotate --propagation-delay 0 --retire-after 0 signs with the new key at once and unpublishes the old ones', async () => {
    const r = await server.cli(['keys', 'rotate', '--propagation-delay', '0', '--retire-after', '0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { kid } = JSON.parse(r.stdout) as { kid: string };
    assert.deepEqual(await published(), [kid]);
    assert.equal(kidOf(await token()), kid);
  });
});

describe('the key schedule, on a controllable clock', () => {
  const MIN = 60_000;
  // K1 signed since t=0; rotated at t=100 min: K2 signs from t=115, K1 retires at t=115+65.
  const keys = [
    { kid: 'K1', signsFrom: 0, retireAt: 180 * MIN },
    { kid: 'K2', signsFrom: 115 * MIN, retireAt: null },
  ];
  const at = (minutes: number) => {
    const s = keySchedule(keys, minutes * MIN);
    return { published: s.published.map((k) => k.kid), nextChange: s.nextChange === undefined ? undefined : s.nextChange / MIN };
  };

  it('issue-14: publishes the new key first, signs with it after the delay, retires the old after the longest lifetime', () => {
    assert.deepEqual(at(101), { published: ['K1', 'K2'], nextChange: 115 }, 'published, not signing');
    assert.deepEqual(at(115), { published: ['K2', 'K1'], nextChange: 180 }, 'signing; the old key still verifies');
    assert.deepEqual(at(180), { published: ['K2'], nextChange: undefined }, 'the old key retired');
  });

  it('issue-14: never leaves the server without a key that may sign', () => {
    const stale = [
      { kid: 'K1', signsFrom: 0, retireAt: 10 * MIN },
      { kid: 'K2', signsFrom: 20 * MIN, retireAt: null },
    ];
    assert.deepEqual(
      keySchedule(stale, 15 * MIN).published.map((k) => k.kid),
      ['K1', 'K2'],
    );
  });
});
