/**
 * Issue 19, asynchronous approval (OpenID CIBA Core 1.0): an agent asks for its user's yes on
 * the backchannel authentication endpoint; the request waits on the user's /account page; the
 * user approves or denies it there; the agent polls (authorization_pending, slow_down) and gets
 * its token or access_denied, or expired_token once the request ran out. Another user can
 * neither see nor answer it. Everything is audited with the binding message. (The same flow
 * in a real browser, ping mode and the product's webhook: test/browser/human-approval.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { signInToAccount, waitingIds } from './helpers/account.ts';
import { openDirect } from './helpers/direct-db.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { payment, PAYMENTS_API, registerPaymentType } from './helpers/details-types.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';

const CIBA_GRANT = 'urn:openid:params:grant-type:ciba';

const bodyError = async (promise: Promise<unknown>): Promise<string> => {
  try {
    await promise;
  } catch (err) {
    return String((err as client.ResponseBodyError).error);
  }
  throw new Error('expected an OAuth error');
};

describe('human approval (CIBA, poll mode)', () => {
  let server: TestServer;
  let agent: client.Configuration;
  let agentId: string;

  before(async () => {
    server = await startServer({ APPROVAL_POLL_INTERVAL: '1' });
    await createScope(server, 'payments:initiate', 'Start payments');
    await registerPaymentType(server);
    const made = await createAgent(server, { name: 'Shopping agent', grantTypes: [CIBA_GRANT], scope: 'openid payments:initiate' });
    agentId = made.clientId;
    agent = await clientFor(server, made);
  });
  after(() => server?.stop());

  const ask = (user: TestUser, extra: Record<string, string> = {}) =>
    client.initiateBackchannelAuthentication(agent, {
      scope: 'openid payments:initiate',
      login_hint: user.username,
      binding_message: 'ORDER-7731',
      authorization_details: JSON.stringify([payment()]),
      ...extra,
    });

  const poll = (authReqId: string) => client.genericGrantRequest(agent, CIBA_GRANT, { auth_req_id: authReqId });

  it('issue-19: the metadata names the backchannel endpoint, both delivery modes, and no user codes', async () => {
    const meta = (await (await fetch(`${server.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    assert.equal(meta.backchannel_authentication_endpoint, `${server.issuer}/backchannel`);
    assert.deepEqual(meta.backchannel_token_delivery_modes_supported, ['poll', 'ping']);
    assert.equal(meta.backchannel_user_code_parameter_supported, false);
    assert.ok((meta.grant_types_supported as string[]).includes(CIBA_GRANT));
  });

  it('issue-19: the request waits on /account, is approved, and the polling agent gets a token whose introspection shows the payment', async () => {
    const user = await createUser(server);
    const asked = await ask(user);
    assert.equal(asked.interval, 1);
    assert.equal(await bodyError(poll(asked.auth_req_id)), 'authorization_pending');
    assert.equal(await bodyError(poll(asked.auth_req_id)), 'slow_down', 'polled again at once');

    const account = await signInToAccount(server.issuer, user);
    const html = await account.html();
    assert.match(html, /Waiting for you/);
    assert.match(html, /Shopping agent asks/);
    assert.match(html, /<li class="detail">Pay 420\.00 USD to ACME Corp<\/li>/);
    assert.match(html, /<li class="detail">Start payments<\/li>/);
    assert.match(html, /<strong class="binding-message">ORDER-7731<\/strong>/);
    assert.match(html, /Expires <time[^>]*>in 1[45] minutes<\/time>/);
    const [id] = waitingIds(html);
    const answered = await account.answer(id!, 'approve');
    assert.equal(answered.status, 303);
    assert.doesNotMatch(await account.html(), /Waiting for you/);

    const tokens = await client.pollBackchannelAuthenticationGrant(agent, asked);
    assert.deepEqual(tokens.authorization_details, [payment()]);
    assert.equal(tokens.refresh_token, undefined, 'a one-time payment is not refreshable');
    const introspected = await client.tokenIntrospection(agent, tokens.access_token);
    assert.equal(introspected.active, true);
    assert.equal(introspected.sub, user.id);
    assert.equal(introspected.aud, PAYMENTS_API);
    assert.deepEqual(introspected.authorization_details, [payment()]);
    // RFC 9470: the sign-in that approved, for a resource server that wants a fresh one.
    assert.equal(introspected.acr, 'urn:agentauth:acr:password');
    assert.equal(typeof introspected.auth_time, 'number');

    const events = JSON.parse((await server.cli(['audit', 'export', '--client', agentId, '--json'])).stdout).events as {
      event_type: string;
      account_id: string;
      details: Record<string, unknown>;
    }[];
    for (const type of ['approval.requested', 'approval.approved']) {
      const event = events.find((e) => e.event_type === type && e.account_id === user.id);
      assert.ok(event, type);
      assert.equal(event.details.binding_message, 'ORDER-7731');
      assert.deepEqual(event.details.authorization_details, [payment()]);
    }
  });

  it('issue-19: denied: the agent is told access_denied, and the request leaves the page', async () => {
    const user = await createUser(server);
    const asked = await ask(user);
    const account = await signInToAccount(server.issuer, user);
    const [id] = waitingIds(await account.html());
    assert.equal((await account.answer(id!, 'deny')).status, 303);
    assert.deepEqual(waitingIds(await account.html()), []);
    assert.equal(await bodyError(client.pollBackchannelAuthenticationGrant(agent, asked)), 'access_denied');
    assert.equal((await account.answer(id!, 'approve')).status, 404, 'a second answer changes nothing');
  });

  it('issue-19: another user neither sees the request nor can approve it', async () => {
    const owner = await createUser(server);
    const other = await createUser(server);
    const asked = await ask(owner);
    const ownerPage = await signInToAccount(server.issuer, owner);
    const [id] = waitingIds(await ownerPage.html());
    const otherPage = await signInToAccount(server.issuer, other);
    assert.deepEqual(waitingIds(await otherPage.html()), []);
    assert.doesNotMatch(await otherPage.html(), /ORDER-7731/);
    assert.equal((await otherPage.answer(id!, 'approve')).status, 404);
    assert.equal((await otherPage.answer(id!, 'deny')).status, 404);
    assert.equal(await bodyError(poll(asked.auth_req_id)), 'authorization_pending', 'still waiting for its own user');
    assert.deepEqual(waitingIds(await ownerPage.html()), [id]);
  });

  it('issue-19: a form without its CSRF token answers nothing', async () => {
    const user = await createUser(server);
    await ask(user);
    const account = await signInToAccount(server.issuer, user);
    const [id] = waitingIds(await account.html());
    const { postForm } = await import('./helpers/browserless.ts');
    assert.equal((await postForm(account.jar, `${server.issuer}/account/approvals/${id}/approve`, { csrf: 'forged' })).status, 403);
    assert.deepEqual(waitingIds(await account.html()), [id]);
  });

  it('issue-19: bad requests get the right CIBA errors', async () => {
    const user = await createUser(server);
    const refused = async (extra: Record<string, string>) => bodyError(ask(user, extra));
    assert.equal(await refused({ authorization_details: JSON.stringify([payment({ amount: 'lots' })]) }), 'invalid_authorization_details');
    assert.equal(await refused({ login_hint: 'nobody-by-this-name' }), 'unknown_user_id');
    assert.equal(await refused({ binding_message: 'x'.repeat(101) }), 'invalid_binding_message');
    assert.equal(await refused({ binding_message: 'line\nbreak' }), 'invalid_binding_message');
    assert.equal(await refused({ user_code: '1234' }), 'invalid_request');
  });

  it('issue-19: expired: gone from the page, expired_token to the agent, and too late to approve', {
    skip: REAL_SERVICES ? false : 'moves the clock by editing PostgreSQL while the server runs; needs DATABASE_URL',
  }, async () => {
    const user = await createUser(server);
    const asked = await ask(user, { requested_expiry: '600' });
    const account = await signInToAccount(server.issuer, user);
    const [id] = waitingIds(await account.html());
    // The controllable clock: the request's expiry moved into the past, in oidc-provider's
    // payload and in the row the page lists (what ten minutes of waiting would do).
    const db = await openDirect(server);
    try {
      await db.query(
        `UPDATE oidc_artifacts SET payload = jsonb_set(payload, '{exp}', to_jsonb(extract(epoch FROM now())::int - 5)) WHERE model = 'BackchannelAuthenticationRequest'`,
      );
      await db.query("UPDATE approval_requests SET expires_at = now() - interval '5 seconds' WHERE id = $1", [id]);
    } finally {
      await db.close();
    }
    assert.deepEqual(waitingIds(await account.html()), []);
    assert.equal((await account.answer(id!, 'approve')).status, 404);
    assert.equal(await bodyError(poll(asked.auth_req_id)), 'expired_token');
  });
});
