/**
 * Issue 19, the device authorization grant (RFC 8628) for agents in a terminal: the user types
 * the code at /device, confirms the agent, signs in and consents with the ordinary pages, and the
 * polling agent gets its token; polling too fast is slow_down; guessing user codes is limited per
 * address. (The same flow in Chromium: test/browser/human-approval.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, CookieJar, csrfOf, followOnIssuer, postForm } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const xsrfOf = (html: string) => /name="xsrf" value="([^"]+)"/.exec(html)?.[1] ?? '';

describe('device flow', () => {
  let server: TestServer;
  let agent: client.Configuration;

  before(async () => {
    server = await startServer({ APPROVAL_POLL_INTERVAL: '1' });
    await createScope(server, 'notes:read', 'Read your notes');
    agent = await clientFor(server, await createAgent(server, { name: 'Terminal agent', public: true, grantTypes: [DEVICE_GRANT], scope: 'notes:read' }));
  });
  after(() => server?.stop());

  /** Types the code at /device, confirms, signs in and allows; returns the last page. */
  async function enterCode(user: TestUser, userCode: string, jar = new CookieJar()): Promise<string> {
    const page = await (await browse(jar, `${server.issuer}/device`)).text();
    let res = await postForm(jar, `${server.issuer}/device`, { xsrf: xsrfOf(page), user_code: userCode });
    const confirm = await res.text();
    assert.match(confirm, /Connect Terminal agent\?/);
    res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}/device`, { xsrf: xsrfOf(confirm), user_code: userCode, confirm: 'yes' }),
    );
    let html = await res.text();
    const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
    assert.ok(login, `the login page follows:\n${html}`);
    res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
    );
    html = await res.text();
    const consent = /action="(\/interaction\/[^"]+\/consent)"/.exec(html)?.[1];
    assert.ok(consent, `the consent page follows:\n${html}`);
    res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}${consent}`, { csrf: csrfOf(html), scope: 'notes:read', decision: 'allow' }),
    );
    return res.text();
  }

  it('issue-19: the metadata names the device authorization endpoint and grant', async () => {
    const meta = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.equal(meta.device_authorization_endpoint, `${server.issuer}/device/auth`);
    assert.ok((meta.grant_types_supported as string[]).includes(DEVICE_GRANT));
  });

  it('issue-19: the user types the code, signs in and allows; the polling agent gets its token', async () => {
    const user = await createUser(server);
    const started = await client.initiateDeviceAuthorization(agent, { scope: 'notes:read' });
    assert.equal(started.verification_uri, `${server.issuer}/device`);
    assert.match(started.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    assert.equal(started.interval, 1);
    const tokens = client.pollDeviceAuthorizationGrant(agent, started);
    const done = await enterCode(user, started.user_code);
    assert.match(done, /Terminal agent is connected/);
    const issued = await tokens;
    assert.equal(issued.scope, 'notes:read');
    const introspected = await client.tokenIntrospection(agent, issued.access_token);
    assert.equal(introspected.active, true);
    assert.equal(introspected.sub, user.id);
  });

  it('issue-19: polling again at once is slow_down', async () => {
    const started = await client.initiateDeviceAuthorization(agent, { scope: 'notes:read' });
    const once = () => client.genericGrantRequest(agent, DEVICE_GRANT, { device_code: started.device_code });
    await assert.rejects(once(), (err: client.ResponseBodyError) => err.error === 'authorization_pending');
    await assert.rejects(once(), (err: client.ResponseBodyError) => err.error === 'slow_down');
  });
});

describe('device flow: guessing user codes', () => {
  let server: TestServer;
  let agent: client.Configuration;

  before(async () => {
    server = await startServer();
    await createScope(server, 'notes:read', 'Read your notes');
    agent = await clientFor(server, await createAgent(server, { name: 'Terminal agent', public: true, grantTypes: [DEVICE_GRANT], scope: 'notes:read' }));
  });
  after(() => server?.stop());

  it('issue-19: a wrong code is refused in words; ten tries from one address, and the eleventh is 429 even with the right code', async () => {
    const started = await client.initiateDeviceAuthorization(agent, { scope: 'notes:read' });
    const jar = new CookieJar();
    for (let i = 0; i < 10; i++) {
      const page = await (await browse(jar, `${server.issuer}/device`)).text();
      const res = await postForm(jar, `${server.issuer}/device`, { xsrf: xsrfOf(page), user_code: `WRNG-${String(i).padStart(4, 'B')}` });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /That code is not right/);
    }
    const page = await (await browse(jar, `${server.issuer}/device`)).text();
    const res = await postForm(jar, `${server.issuer}/device`, { xsrf: xsrfOf(page), user_code: started.user_code });
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
  });
});
