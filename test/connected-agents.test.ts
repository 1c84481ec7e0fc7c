/**
 * The connected agents page over HTTP: the same login as the flow, the agent listed with only the
 * scopes granted, revocation behind confirmation and CSRF that kills every token at once, 404 for
 * another user's grant, hostile agent names shown as text.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, codeFlowTokens, csrfOf, followOnIssuer, postForm, signInToAccount } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';

describe('connected agents page', () => {
  let server: TestServer;

  before(async () => {
    server = await startServer();
    await createScope(server, 'calendar:read', 'See your calendar');
    await createScope(server, 'calendar:write', 'Change your calendar');
  });
  after(() => server?.stop());

  async function connect(user: TestUser, name: string, untick: string[] = []) {
    const agent = await createAgent(server, { name, redirectUris: [REDIRECT_URI], scope: 'calendar:read calendar:write' });
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'calendar:read calendar:write', redirectUri: REDIRECT_URI, choice: { untick } });
    return { agent, config, tokens };
  }

  it('lists each agent with only the scopes the user granted', async () => {
    const user = await createUser(server);
    await connect(user, 'Calendar helper', ['calendar:write']);
    const { html } = await signInToAccount(server, user);
    assert.match(html, /Calendar helper/);
    assert.match(html, /See your calendar/);
    assert.doesNotMatch(html, /Change your calendar/);
    assert.match(html, /Live tokens<\/dt><dd>2</);
    assert.match(html, /Got an access token/);
    assert.doesNotMatch(html, /Your connected agents<\/strong>/);
    assert.doesNotMatch(html, /agentauth-account/, "agentauth's own client is not listed");
    // Times in the reader's words, the full time on hover (issue 20).
    assert.match(html, /<dt>Allowed<\/dt><dd><time datetime="\d{4}-\d\d-\d\dT[\d:.]+Z" title="\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC">just now<\/time>/);
    assert.doesNotMatch(html, />\d{4}-\d\d-\d\dT[\d:.]+Z</, 'no ISO string is shown as text');
  });

  it('revokes one agent behind a confirmation and a CSRF token; its tokens die at once', async () => {
    const user = await createUser(server);
    const { config, tokens } = await connect(user, 'Revocable agent');
    const { jar, html } = await signInToAccount(server, user);
    const revokePath = /href="(\/account\/agents\/[^"]+\/revoke)"/.exec(html)![1]!;
    const confirm = await browse(jar, `${server.issuer}${revokePath}`);
    const confirmHtml = await confirm.text();
    assert.match(confirmHtml, /Revoke access\?/);
    assert.match(confirmHtml, /Revocable agent/);

    const forged = await postForm(jar, `${server.issuer}${revokePath}`, {});
    assert.equal(forged.status, 403, 'no CSRF token');
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, true, 'nothing changed');
    const viaGet = await browse(jar, `${server.issuer}${revokePath}`);
    assert.equal(viaGet.status, 200, 'GET only shows the confirmation');
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, true);

    const done = await postForm(jar, `${server.issuer}${revokePath}`, { csrf: csrfOf(confirmHtml) });
    assert.equal(done.status, 303);
    const page = await (await followOnIssuer(jar, server.issuer, done)).text();
    assert.match(page, /Access revoked/);
    assert.doesNotMatch(page, /Revocable agent/);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
    const events = JSON.parse((await server.cli(['audit', 'export', '--user', user.username, '--json'])).stdout).events as {
      event_type: string;
      actor_type: string;
      details: { reason?: string };
    }[];
    assert.ok(events.some((e) => e.event_type === 'grant.revoked' && e.actor_type === 'user' && e.details.reason === 'user_revoked'));
  });

  it("answers 404 for another user's grant, and changes nothing", async () => {
    const alice = await createUser(server);
    const bob = await createUser(server);
    const { config, tokens } = await connect(bob, "Bob's agent");
    const bobPage = (await signInToAccount(server, bob)).html;
    const bobsRevoke = /href="(\/account\/agents\/[^"]+\/revoke)"/.exec(bobPage)![1]!;
    const { jar, html } = await signInToAccount(server, alice);
    assert.equal((await browse(jar, `${server.issuer}${bobsRevoke}`)).status, 404);
    assert.equal((await postForm(jar, `${server.issuer}${bobsRevoke}`, { csrf: csrfOf(html) })).status, 404);
    assert.equal((await postForm(jar, `${server.issuer}/account/agents/not-a-grant/revoke`, { csrf: csrfOf(html) })).status, 404);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, true);
  });

  it('revokes every agent with "Revoke all"', async () => {
    const user = await createUser(server);
    const first = await connect(user, 'First agent');
    const second = await connect(user, 'Second agent');
    const { jar } = await signInToAccount(server, user);
    const confirm = await (await browse(jar, `${server.issuer}/account/revoke-all`)).text();
    assert.match(confirm, /First agent/);
    assert.match(confirm, /Second agent/);
    const done = await postForm(jar, `${server.issuer}/account/revoke-all`, { csrf: csrfOf(confirm) });
    assert.equal(done.status, 303);
    for (const { config, tokens } of [first, second]) assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    const page = await (await followOnIssuer(jar, server.issuer, done)).text();
    assert.match(page, /No agent has access/);
  });

  it('shows hostile agent names and URIs as text, and cannot be framed', async () => {
    const user = await createUser(server);
    await connect(user, '<img src=x onerror=alert(1)>"><svg onload=alert(2)>');
    const { jar, html } = await signInToAccount(server, user);
    assert.doesNotMatch(html, /<img src=x/);
    assert.doesNotMatch(html, /<svg onload/);
    assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
    const res = await browse(jar, `${server.issuer}/account`);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
  });

  it('signs out with a CSRF-protected POST', async () => {
    const user = await createUser(server);
    const { jar, html } = await signInToAccount(server, user);
    assert.equal((await postForm(jar, `${server.issuer}/account/sign-out`, {})).status, 403);
    const out = await postForm(jar, `${server.issuer}/account/sign-out`, { csrf: csrfOf(html) });
    assert.equal(out.status, 303);
    const again = await browse(jar, `${server.issuer}/account`);
    assert.equal(again.status, 303, 'signed out: back to the login flow');
    assert.match(again.headers.get('location') ?? '', /^\/auth\?/);
  });
});
