/**
 * Issue 19, rich authorization requests (RFC 9396) with types the product registered: a detail
 * whose fields fail its type's JSON Schema, or of an unknown type, is refused with
 * invalid_authorization_details; an accepted one is shown on consent as its sentence and carried
 * by the token response, the JWT access token, introspection and the audit trail; a one-time
 * detail yields a short-lived token and no refresh token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { CookieJar } from './helpers/browserless.ts';
import { PAYMENTS_API, PAYMENT_SCHEMA, payment, registerPaymentType, schemaFile } from './helpers/details-types.ts';

const GIT_API = 'https://git.example.com/';

const payloadOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

async function par(server: TestServer, agent: { clientId: string }, config: client.Configuration, details: unknown) {
  const verifier = client.randomPKCECodeVerifier();
  const params = {
    redirect_uri: 'http://127.0.0.1/cb',
    scope: 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    authorization_details: JSON.stringify(details),
  };
  return { verifier, params, response: client.buildAuthorizationUrlWithPAR(config, params), clientId: agent.clientId, server };
}

describe('rich authorization requests', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
    await createScope(server, 'payments:initiate', 'Start payments');
    await registerPaymentType(server);
    await createScope(server, 'repos:admin', 'Manage your repositories');
    assert.equal((await server.cli(['resources', 'create', GIT_API, '--scopes', 'repos:admin', '--token-format', 'jwt'])).code, 0);
    const schema = {
      type: 'object',
      properties: { count: { type: 'integer', minimum: 1, maximum: 100 }, owner: { type: 'string', maxLength: 100 } },
      required: ['count', 'owner'],
      additionalProperties: false,
    };
    const r = await server.cli([
      'details-types',
      'create',
      'repository_deletion',
      '--schema-file',
      schemaFile(schema),
      '--template',
      'Delete {count} repositories of {owner}',
      '--resource',
      GIT_API,
    ]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => server?.stop());

  it('issue-19: the metadata names the registered types', async () => {
    const meta = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.deepEqual(meta.authorization_details_types_supported, ['payment_initiation', 'repository_deletion']);
  });

  it('issue-19: refuses to register a type whose sentence names a field the schema does not require', async () => {
    const r = await server.cli(['details-types', 'create', 'bad_type', '--schema-file', schemaFile(PAYMENT_SCHEMA), '--template', 'Pay {amount} to {iban}']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\{iban\}, which the schema does not require/);
  });

  it('issue-19: a schema-violating detail, and a detail of an unknown type, are refused with invalid_authorization_details', async () => {
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'openid payments:initiate' });
    const config = await clientFor(server, agent);
    for (const details of [
      [{ ...payment(), amount: 420 }], // a number where the schema wants a string
      [{ ...payment(), currency: 'XXX' }], // not in the enum
      [{ ...payment(), extra: 'field' }], // additionalProperties: false
      [{ type: 'delete_repositories', count: 3 }], // never registered
    ]) {
      const { response } = await par(server, agent, config, details);
      await assert.rejects(response, (err: client.ResponseBodyError) => {
        assert.equal(err.error, 'invalid_authorization_details', JSON.stringify(details));
        return true;
      });
    }
  });

  it('issue-19: a one-time payment detail is shown as its sentence, carried in the token, the JWT, introspection and the audit trail; no refresh token', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, {
      redirectUris: ['http://127.0.0.1/cb'],
      scope: 'openid payments:initiate',
      grantTypes: ['authorization_code', 'refresh_token'],
    });
    const config = await clientFor(server, agent);
    const detail = payment();
    const { verifier, response } = await par(server, agent, config, [detail]);
    const { callback, consentHtml } = await authorize(server.issuer, await response, user);
    assert.match(consentHtml, /<li class="detail">Pay 420\.00 USD to ACME Corp<\/li>/);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: PAYMENTS_API });
    assert.deepEqual(tokens.authorization_details, [detail]);
    assert.equal(tokens.refresh_token, undefined, 'a one-time detail is not refreshable');
    assert.ok(tokens.expires_in! <= 120, `short-lived, got ${tokens.expires_in}`);
    const introspected = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(introspected.active, true);
    assert.deepEqual(introspected.authorization_details, [detail]);
    const events = JSON.parse((await server.cli(['audit', 'export', '--client', agent.clientId, '--json'])).stdout).events as {
      event_type: string;
      details: Record<string, unknown>;
    }[];
    assert.deepEqual(events.find((e) => e.event_type === 'consent.granted')?.details.authorization_details, [detail]);
    assert.deepEqual(events.find((e) => e.event_type === 'token.issued')?.details.authorization_details, [detail]);
  });

  it("issue-19: a JWT access token for the details' resource server carries them (client credentials)", async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'repos:admin' });
    const config = await clientFor(server, agent);
    const detail = { type: 'repository_deletion', count: 3, owner: 'alice' };
    const tokens = await client.clientCredentialsGrant(config, { scope: 'repos:admin', authorization_details: JSON.stringify([detail]) });
    assert.deepEqual(tokens.authorization_details, [detail]);
    const jwt = payloadOf(tokens.access_token);
    assert.equal(jwt.aud, GIT_API, 'the type names its resource server');
    assert.deepEqual(jwt.authorization_details, [detail]);
  });

  it('issue-19: a detail full of markup is shown as text on consent', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'openid payments:initiate' });
    const config = await clientFor(server, agent);
    const { response } = await par(server, agent, config, [payment({ creditor: '<img src=x onerror=alert(1)>' })]);
    const { consentHtml } = await authorize(server.issuer, await response, user);
    assert.match(consentHtml, /Pay 420\.00 USD to &lt;img src=x onerror=alert\(1\)&gt;/);
    assert.doesNotMatch(consentHtml, /<img src=x/);
  });

  it('issue-19: the approval is for that transaction only: the next request with a detail asks the user again', async () => {
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'openid payments:initiate' });
    const config = await clientFor(server, agent);
    const first = await par(server, agent, config, [payment()]);
    const jar = new CookieJar();
    const one = await authorize(server.issuer, await first.response, user, {}, jar);
    assert.match(one.consentHtml, /Pay 420\.00 USD/);
    const second = await par(server, agent, config, [payment({ amount: '17.50', creditor: 'Bakery' })]);
    const two = await authorize(server.issuer, await second.response, user, {}, jar);
    assert.match(two.consentHtml, /Pay 17\.50 USD to Bakery/, 'consent asked again, for the new detail');
    const tokens = await client.authorizationCodeGrant(config, two.callback, { pkceCodeVerifier: second.verifier }, { resource: PAYMENTS_API });
    assert.deepEqual(
      (tokens.authorization_details as unknown as { creditor: string }[]).map((d) => d.creditor),
      ['Bakery'],
      'only what this request asked',
    );
  });
});
