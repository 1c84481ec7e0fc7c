/**
 * Issue 19 in a real browser (Debian's Chromium driven by playwright-core): an agent's CIBA
 * request with a payment detail appears at the top of the user's /account page, is approved with
 * a click, and the polling agent gets a token whose introspection shows the payment; a denial; a
 * ping-mode agent is told at its own host (over https, through the outbound module) and the
 * product's webhook receives a signed event; another user's page shows nothing to approve.
 */
import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as client from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { chromiumUnavailable, launchChromium } from '../helpers/chromium.ts';
import { payment, registerPaymentType } from '../helpers/details-types.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from '../helpers/factories.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { createTestHost, testHostEnv, testHostsUnavailable, type TestHost } from '../helpers/test-host.ts';

const CIBA_GRANT = 'urn:openid:params:grant-type:ciba';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const APPROVAL_REQUESTED_EVENT = 'https://agentauth.dev/secevent/approval-requested';
const skip = chromiumUnavailable || (testHostsUnavailable ?? false);

interface Delivery {
  authorization: string;
  body: string;
}

/** An https host that records what it is sent and wakes whoever waits for the next delivery. */
async function receiver(label: string): Promise<{ host: TestHost; next(match?: (d: Delivery) => boolean): Promise<Delivery> }> {
  const seen: Delivery[] = [];
  const waiters: { match: (d: Delivery) => boolean; resolve(d: Delivery): void }[] = [];
  const host = await createTestHost(label, (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d;
    });
    req.on('end', () => {
      const delivery = { authorization: String(req.headers.authorization ?? ''), body };
      seen.push(delivery);
      for (const w of waiters.filter((w) => w.match(delivery))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(delivery);
      }
      res.writeHead(204).end();
    });
  });
  return {
    host,
    next: (match = () => true) =>
      new Promise((resolve) => {
        const already = seen.find(match);
        if (already) return resolve(already);
        waiters.push({ match, resolve });
      }),
  };
}

describe('human approval in Chromium', { skip }, () => {
  let server: TestServer;
  let browser: Browser;
  let pingHost: Awaited<ReturnType<typeof receiver>>;
  let product: Awaited<ReturnType<typeof receiver>>;

  before(async () => {
    pingHost = await receiver('agent');
    product = await receiver('product');
    server = await startServer({ ...testHostEnv(), APPROVAL_POLL_INTERVAL: '1', APPROVAL_WEBHOOK_URL: `${product.host.origin}/approvals` });
    await createScope(server, 'payments:initiate', 'Start payments');
    await registerPaymentType(server);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await pingHost?.host.close();
    await product?.host.close();
  });

  /** /account in a fresh browser, signed in through the ordinary login page. */
  async function accountPage(user: TestUser): Promise<Page> {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.issuer}/account`);
    await page.getByLabel('Username').fill(user.username);
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your connected agents' }).waitFor();
    return page;
  }

  async function pollingAgent(name: string) {
    const agent = await createAgent(server, { name, grantTypes: [CIBA_GRANT], scope: 'openid payments:initiate' });
    return { agent, config: await clientFor(server, agent) };
  }

  const ask = (config: client.Configuration, user: TestUser, binding: string, extra: Record<string, string> = {}) =>
    client.initiateBackchannelAuthentication(config, {
      scope: 'openid payments:initiate',
      login_hint: user.username,
      binding_message: binding,
      authorization_details: JSON.stringify([payment()]),
      ...extra,
    });

  it('issue-19: a payment request appears on /account, is approved, and the polling agent gets a token showing the payment', async () => {
    const user = await createUser(server);
    const { config } = await pollingAgent('Shopping agent');
    const asked = await ask(config, user, 'ORDER-1001');
    const page = await accountPage(user);
    const waiting = page.locator('section.waiting li.approval');
    assert.equal(await waiting.count(), 1);
    const text = await waiting.innerText();
    assert.match(text, /Shopping agent asks/);
    assert.match(text, /Pay 420\.00 USD to ACME Corp/);
    assert.match(text, /ORDER-1001/);
    assert.match(text, /Expires in 1[45] minutes/);
    // The section comes before the list of connected agents.
    assert.ok((await page.content()).indexOf('Waiting for you') < (await page.content()).indexOf('Sign out'), 'the waiting section is at the top');
    const tokens = client.pollBackchannelAuthenticationGrant(config, asked);
    await waiting.getByRole('button', { name: 'Approve' }).click();
    await page.getByText('Approved. The agent can go ahead').waitFor();
    assert.equal(await page.locator('section.waiting').count(), 0);
    const issued = await tokens;
    const introspected = await client.tokenIntrospection(config, issued.access_token);
    assert.equal(introspected.active, true);
    assert.deepEqual(introspected.authorization_details, [payment()]);

    // The product heard of the request by a signed event, with what the user was asked.
    const event = await product.next((d) => d.body.includes('.'));
    const jwks = createRemoteJWKSet(new URL(`${server.issuer}/jwks`));
    const { payload, protectedHeader } = await jwtVerify(event.body, jwks, { issuer: server.issuer, typ: 'secevent+jwt' });
    assert.equal(protectedHeader.alg, 'ES256');
    const claims = (payload.events as Record<string, Record<string, unknown>>)[APPROVAL_REQUESTED_EVENT]!;
    assert.equal(claims.sub, user.id);
    assert.equal(claims.binding_message, 'ORDER-1001');
    assert.deepEqual(claims.authorization_details, [payment()]);
  });

  it('issue-19: denied in the browser: the agent is told access_denied', async () => {
    const user = await createUser(server);
    const { config } = await pollingAgent('Eager agent');
    const asked = await ask(config, user, 'ORDER-1002');
    const page = await accountPage(user);
    const denied = assert.rejects(client.pollBackchannelAuthenticationGrant(config, asked), (err: client.ResponseBodyError) => err.error === 'access_denied');
    await page.locator('section.waiting li.approval').getByRole('button', { name: 'Deny' }).click();
    await page.getByText('Denied. The agent has been told no.').waitFor();
    await denied;
  });

  it('issue-19: ping mode: the agent is told at its own host, then fetches its token once', async () => {
    const user = await createUser(server);
    const made = await createAgent(server, {
      name: 'Pinged agent',
      grantTypes: [CIBA_GRANT],
      scope: 'openid payments:initiate',
      cibaPingUri: `${pingHost.host.origin}/ciba`,
    });
    const config = await clientFor(server, made);
    const asked = await ask(config, user, 'ORDER-1003', { client_notification_token: 'notify-me-0123456789' });
    const page = await accountPage(user);
    const pinged = pingHost.next((d) => d.body.includes(asked.auth_req_id));
    await page.locator('section.waiting li.approval').getByRole('button', { name: 'Approve' }).click();
    const ping = await pinged;
    assert.equal(ping.authorization, 'Bearer notify-me-0123456789');
    assert.deepEqual(JSON.parse(ping.body), { auth_req_id: asked.auth_req_id });
    const tokens = await client.genericGrantRequest(config, CIBA_GRANT, { auth_req_id: asked.auth_req_id });
    assert.deepEqual(tokens.authorization_details, [payment()]);
  });

  it('issue-19: another user signed in sees nothing to approve', async () => {
    const owner = await createUser(server);
    const other = await createUser(server);
    const { config } = await pollingAgent('Someone else\u2019s agent');
    await ask(config, owner, 'ORDER-1004');
    const page = await accountPage(other);
    assert.equal(await page.locator('section.waiting').count(), 0);
    assert.doesNotMatch(await page.content(), /ORDER-1004/);
  });

  it('issue-19: device flow: the browser enters the code, signs in with the same login, and the terminal agent gets its token', async () => {
    const user = await createUser(server);
    const config = await clientFor(
      server,
      await createAgent(server, { name: 'Terminal agent', public: true, grantTypes: [DEVICE_GRANT], scope: 'payments:initiate' }),
    );
    const started = await client.initiateDeviceAuthorization(config, { scope: 'payments:initiate' });
    const tokens = client.pollDeviceAuthorizationGrant(config, started);
    const page = await (await browser.newContext()).newPage();
    await page.goto(started.verification_uri);
    await page.getByLabel('Code').fill(started.user_code.toLowerCase().replace('-', ' '));
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'Connect Terminal agent?' }).waitFor();
    assert.equal(await page.locator('strong.user-code').innerText(), started.user_code);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByLabel('Username').fill(user.username);
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Terminal agent is connected' }).waitFor();
    const issued = await tokens;
    assert.equal((await client.tokenIntrospection(config, issued.access_token)).sub, user.id);
  });
});
