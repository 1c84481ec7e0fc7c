/**
 * Admin client management: an update is checked as a whole new registration; disabling or
 * deleting a client revokes every grant and token it holds, at once, and is audited.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';

describe('client management', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
    await createScope(server, 'mail:read', 'Read your mail');
  });
  after(() => server?.stop());

  const cli = async (...args: string[]) => server.cli(args);

  it('updates a client and checks the resulting client as a whole', async () => {
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'mail:read' });
    const renamed = await cli('clients', 'update', agent.clientId, '--name', 'Renamed agent', '--json');
    assert.equal(renamed.code, 0, renamed.stderr);
    assert.equal(JSON.parse(renamed.stdout).client_name, 'Renamed agent');
    assert.deepEqual(JSON.parse(renamed.stdout).redirect_uris, [REDIRECT_URI], 'what was not given stays');

    const refusals: [string[], RegExp][] = [
      [['--grant-types', 'client_credentials'], /redirect_uris are only for clients with the authorization_code grant/],
      [['--redirect-uri', 'http://evil.example/cb'], /invalid_redirect_uri/],
      [['--jwks-uri', 'https://169.254.169.254/keys'], /invalid_client_metadata: jwks_uri/],
      [['--scope', 'not:a:scope'], /unknown scope/],
      [['--name', '<b>\u0007</b>'], /control characters/],
    ];
    for (const [flags, message] of refusals) {
      const r = await cli('clients', 'update', agent.clientId, ...flags);
      assert.equal(r.code, 1, flags.join(' '));
      assert.match(r.stderr, message, flags.join(' '));
    }
    const unchanged = JSON.parse((await cli('clients', 'show', agent.clientId, '--json')).stdout) as Record<string, unknown>;
    assert.equal(unchanged.client_name, 'Renamed agent');
    assert.deepEqual(unchanged.grant_types, ['authorization_code', 'refresh_token']);

    const publicAgent = await createAgent(server, { grantTypes: ['client_credentials'] });
    const toPublic = await cli('clients', 'update', publicAgent.clientId, '--public');
    assert.equal(toPublic.code, 1);
    assert.match(toPublic.stderr, /public client cannot use the client_credentials grant/);

    const events = JSON.parse((await cli('audit', 'export', '--client', agent.clientId, '--json')).stdout).events as {
      event_type: string;
      details: { changed?: string[] };
    }[];
    const updated = events.filter((e) => e.event_type === 'client.updated');
    assert.equal(updated.length, 1, 'refused updates are not recorded as updates');
    assert.deepEqual(updated[0]!.details.changed, ['client_name']);
  });

  async function agentWithTokens(): Promise<{ agent: TestAgent; config: client.Configuration; tokens: client.TokenEndpointResponse }> {
    const agent = await createAgent(server, {
      redirectUris: [REDIRECT_URI],
      scope: 'mail:read',
      grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
    });
    const config = await clientFor(server, agent);
    const user = await createUser(server);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'mail:read', redirectUri: REDIRECT_URI });
    await client.clientCredentialsGrant(config, { scope: 'mail:read' });
    return { agent, config, tokens };
  }

  it('disabling a client revokes its grants and tokens at once', async () => {
    const { agent, config } = await agentWithTokens();
    const r = await cli('clients', 'disable', agent.clientId, '--json');
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout) as { revoked_grants: number; deleted_tokens: number };
    assert.equal(result.revoked_grants, 1);
    assert.ok(result.deleted_tokens >= 3, `deleted ${result.deleted_tokens} tokens (access, refresh, client credentials)`);
    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'mail:read' }), (err: client.ResponseBodyError) => err.error === 'invalid_client');
    const shown = JSON.parse((await cli('clients', 'show', agent.clientId, '--json')).stdout) as { disabled: boolean };
    assert.equal(shown.disabled, true);
    const events = JSON.parse((await cli('audit', 'export', '--client', agent.clientId, '--json')).stdout).events as {
      event_type: string;
      actor_type: string;
      details: { reason?: string };
    }[];
    assert.ok(events.some((e) => e.event_type === 'client.disabled' && e.actor_type === 'admin'));
    assert.ok(events.some((e) => e.event_type === 'grant.revoked' && e.details.reason === 'client_disabled' && e.actor_type === 'admin'));
  });

  it('deleting a client revokes its grants and tokens, then removes it', async () => {
    const { agent, config } = await agentWithTokens();
    const r = await cli('clients', 'delete', agent.clientId, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { revoked_grants: number }).revoked_grants, 1);
    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'mail:read' }), (err: client.ResponseBodyError) => err.error === 'invalid_client');
    const shown = await cli('clients', 'show', agent.clientId);
    assert.equal(shown.code, 1);
    assert.match(shown.stderr, /no client/);
    const events = JSON.parse((await cli('audit', 'export', '--client', agent.clientId, '--json')).stdout).events as { event_type: string }[];
    assert.ok(events.some((e) => e.event_type === 'client.deleted'));
    const again = await cli('clients', 'delete', agent.clientId);
    assert.equal(again.code, 1);
  });
});
