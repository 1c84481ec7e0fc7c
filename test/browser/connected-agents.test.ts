/**
 * The pages in a real browser (Debian's Chromium driven by playwright-core): a user signs in,
 * unticks a scope on the consent page, finds the agent on the connected agents page with only the
 * granted scope, revokes it, and its tokens are dead. Hostile agent names never run as script,
 * and the pages refuse to be framed.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import type { Browser, Page } from 'playwright-core';
import { clientFor, createAgent, createScope, createUser, type TestUser } from '../helpers/factories.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { chromiumUnavailable, launchChromium } from '../helpers/chromium.ts';

const skip = chromiumUnavailable;

describe('pages in Chromium', { skip }, () => {
  let server: TestServer;
  let browser: Browser;
  let callback: http.Server;
  let callbackPort: number;
  const dialogs: string[] = [];

  before(async () => {
    server = await startServer();
    await createScope(server, 'photos:read', 'See your photos');
    await createScope(server, 'photos:delete', 'Delete your photos');
    browser = await launchChromium();
    // The agent's redirect URI: a loopback page that only has to exist.
    callback = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('agent callback'));
    await new Promise<void>((resolve) => callback.listen(0, '127.0.0.1', resolve));
    callbackPort = (callback.address() as AddressInfo).port;
  });
  after(async () => {
    await browser?.close();
    callback?.close();
    await server?.stop();
  });

  async function newPage(): Promise<Page> {
    const page = await (await browser.newContext()).newPage();
    page.on('dialog', async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.dismiss();
    });
    return page;
  }

  async function connectInBrowser(page: Page, user: TestUser, agentName: string, untick: string[]) {
    const agent = await createAgent(server, { name: agentName, redirectUris: ['http://127.0.0.1/cb'], scope: 'photos:read photos:delete' });
    const config = await clientFor(server, agent);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: `http://127.0.0.1:${callbackPort}/cb`,
      scope: 'photos:read photos:delete',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    await page.goto(url.href);
    await page.getByLabel('Username').fill(user.username);
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    for (const description of untick) await page.getByLabel(description).uncheck();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(/127\.0\.0\.1:\d+\/cb\?/);
    const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), { pkceCodeVerifier: verifier });
    return { agent, config, tokens };
  }

  it('login, consent with a scope unticked, the agent listed with only that scope, revoke, tokens dead', async () => {
    const user = await createUser(server);
    const page = await newPage();
    const { config, tokens } = await connectInBrowser(page, user, 'Photo organiser', ['Delete your photos']);
    assert.equal(tokens.scope, 'photos:read');

    await page.goto(`${server.issuer}/account`);
    await page.getByRole('heading', { name: 'Your connected agents' }).waitFor();
    const agent = page.locator('li.agent', { hasText: 'Photo organiser' });
    assert.equal(await agent.count(), 1);
    const text = await agent.innerText();
    assert.match(text, /See your photos/);
    assert.doesNotMatch(text, /Delete your photos/);

    await agent.getByRole('link', { name: 'Revoke access' }).click();
    await page.getByRole('button', { name: 'Revoke' }).click();
    await page.getByText('Access revoked').waitFor();
    assert.equal(await page.locator('li.agent', { hasText: 'Photo organiser' }).count(), 0);
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!), (err: client.ResponseBodyError) => err.error === 'invalid_grant');
  });

  it('shows agent names full of HTML and script as text, and runs none of it', async () => {
    const user = await createUser(server);
    const page = await newPage();
    const hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>{{constructor.constructor('alert(3)')()}}";
    await connectInBrowser(page, user, hostile, []);
    await page.goto(`${server.issuer}/account`);
    await page.getByRole('heading', { name: 'Your connected agents' }).waitFor();
    assert.match(await page.locator('li.agent').first().innerText(), /<img src=x onerror=alert\(1\)>/);
    assert.equal(await page.locator('li.agent img[src="x"]').count(), 0);
    assert.deepEqual(dialogs, [], 'no script ran');
  });

  it('issue-13: a form_post response submits itself to the agent under the CSP', async () => {
    const agent = await createAgent(server, { name: 'Form post agent', redirectUris: ['http://127.0.0.1/cb'], scope: 'photos:read' });
    const redirectUri = `http://127.0.0.1:${callbackPort}/cb`;
    // Without PKCE the request is refused at once, answered by form_post to the redirect URI.
    const params = {
      client_id: agent.clientId,
      redirect_uri: redirectUri,
      response_type: 'code',
      response_mode: 'form_post',
      scope: 'photos:read',
      state: 'fp',
    };
    const page = await newPage();
    const posted = page.waitForRequest((r) => r.url() === redirectUri && r.method() === 'POST', { timeout: 5000 });
    await page.goto(`${server.issuer}/auth?${new URLSearchParams(params)}`);
    const body = new URLSearchParams((await posted).postData() ?? '');
    assert.equal(body.get('error'), 'invalid_request');
    assert.equal(body.get('state'), 'fp');
  });

  it('cannot be framed by another page', async () => {
    const page = await newPage();
    const framer = http.createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<iframe src="${server.issuer}/account"></iframe>`),
    );
    await new Promise<void>((resolve) => framer.listen(0, '127.0.0.1', resolve));
    try {
      await page.goto(`http://127.0.0.1:${(framer.address() as AddressInfo).port}/`);
      await page.waitForTimeout(500);
      for (const frame of page.frames()) {
        const content = await frame.content().catch(() => '');
        assert.doesNotMatch(content, /Sign in|connected agents/, `frame ${frame.url()} rendered our page`);
      }
    } finally {
      framer.close();
    }
  });
});
