/**
 * Connected accounts in a real browser (Debian's Chromium driven by playwright-core): a user signs
 * in to /account, clicks Connect, signs in and consents at the upstream provider (on a test host,
 * by name over https), comes back to the account page with the service listed, and disconnects.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { createAgent, createUser } from '../helpers/factories.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { chromiumUnavailable, launchChromium } from '../helpers/chromium.ts';
import { testHostEnv, testHostsUnavailable } from '../helpers/test-host.ts';
import { startUpstream, type Upstream } from '../helpers/upstream-provider.ts';

const skip = chromiumUnavailable || testHostsUnavailable;

describe('connected accounts in Chromium', { skip }, () => {
  let server: TestServer;
  let upstream: Upstream;
  let browser: Browser;

  before(async () => {
    server = await startServer(testHostEnv());
    upstream = await startUpstream([`${server.issuer}/account/connections/callback`]);
    const agent = await createAgent(server, { name: 'Drive agent' });
    const made = await server.cli(
      ['connections', 'create', 'drive', '--name', 'Drive', '--issuer', upstream.host.origin, '--client-id', upstream.clientId, '--client-secret-stdin'].concat(
        ['--scope', 'openid drive.read', '--agent', agent.clientId],
      ),
      upstream.secret,
    );
    assert.equal(made.code, 0, made.stderr);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await upstream?.close();
  });

  it('connects a service from /account through the provider’s own pages, lists it, and disconnects it', async () => {
    const user = await createUser(server);
    // The test CA is trusted by the server (NODE_EXTRA_CA_CERTS); this browser is told to accept it.
    const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    await page.goto(`${server.issuer}/account`);
    await page.getByLabel('Username').fill(user.username);
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Your connected agents' }).waitFor();

    await page.getByRole('link', { name: 'Connect Drive' }).click();
    await page.waitForURL((url) => url.origin === upstream.host.origin);
    await page.locator('input[name="login"]').fill(user.username);
    await page.locator('input[name="password"]').fill('any');
    await page.getByRole('button', { name: 'Sign-in' }).click();
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByText('Connected. Agents you allow').waitFor();
    const listed = page.locator('li.connection', { hasText: 'Drive' });
    assert.match(await listed.innerText(), /drive\.read/);

    await listed.getByRole('button', { name: 'Disconnect' }).click();
    await page.getByText('Disconnected.').waitFor();
    assert.equal(await page.getByRole('link', { name: 'Connect Drive' }).count(), 1);
    assert.equal(upstream.destroyed.length, 1, 'revoked at the provider');
  });
});
