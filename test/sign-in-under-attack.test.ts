/**
 * Issue 14: password guessing and bursts of sign-ins. Limits are counted before a password is
 * checked (so a parallel burst is cut at the limit), the account + address pair is what locks,
 * password checks hold no database connection, and failed sign-ins never store the typed name.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { browse, csrfOf, openLoginPage, type CookieJar } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from './helpers/factories.ts';
import { clientAssertion, generateTestKey } from './helpers/jwt.ts';
import { postToken } from './helpers/browserless.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

interface LoginPage {
  jar: CookieJar;
  html: string;
  uid: string;
}

async function loginPage(server: TestServer, scope: string): Promise<LoginPage> {
  const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope });
  const config = await clientFor(server, agent);
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: 'http://127.0.0.1/cb',
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
    code_challenge_method: 'S256',
  });
  return openLoginPage(server.issuer, url);
}

/** Posts the login form as if from `address` (the server trusts X-Forwarded-For in these tests). */
function signIn(server: TestServer, page: LoginPage, username: string, password: string, address = '192.0.2.1'): Promise<Response> {
  return browse(page.jar, `${server.issuer}/interaction/${page.uid}/login`, {
    method: 'POST',
    body: new URLSearchParams({ csrf: csrfOf(page.html), username, password }),
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': address },
  });
}

/** 303 back to the login page with an error: the password was checked and was wrong. */
const checkedAndWrong = (res: Response) => res.status === 303 && /error=credentials/.test(res.headers.get('location') ?? '');
/** 303 onward into the provider: signed in. */
const signedIn = (res: Response) => res.status === 303 && !/error=credentials/.test(res.headers.get('location') ?? '');

describe('sign-in under attack', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ LOGIN_FAILURE_LIMIT: '20', LOGIN_ACCOUNT_FAILURE_LIMIT: '30', TRUST_PROXY: 'true' });
    await createScope(server, 'attack:test', 'Attack test');
  });
  after(() => server?.stop());

  it('issue-14: 120 parallel wrong passwords from one address: exactly the limit are checked, the rest 429', async () => {
    const user = await createUser(server);
    const page = await loginPage(server, 'attack:test');
    const responses = await Promise.all(Array.from({ length: 120 }, () => signIn(server, page, user.username, 'wrong password', '198.51.100.7')));
    const checked = responses.filter(checkedAndWrong).length;
    const refused = responses.filter((r) => r.status === 429).length;
    assert.deepEqual({ checked, refused }, { checked: 20, refused: 100 });
  });

  it("issue-14: a correct password from a known-good address is not refused by other addresses' failures", async () => {
    const user = await createUser(server);
    const home = '203.0.113.10';
    assert.ok(signedIn(await signIn(server, await loginPage(server, 'attack:test'), user.username, user.password, home)));
    // A botnet guesses this account's password from many addresses, 10 each (under the per-address
    // limit), until the per-account limit (30) refuses new addresses.
    const page = await loginPage(server, 'attack:test');
    const guesses: Response[] = [];
    for (let bot = 0; bot < 4; bot++) {
      for (let i = 0; i < 10; i++) guesses.push(await signIn(server, page, user.username, 'guess', `198.18.0.${bot + 1}`));
    }
    assert.equal(guesses.filter(checkedAndWrong).length, 30);
    assert.equal(guesses.filter((r) => r.status === 429).length, 10);
    // A new address is refused for this account; its owner at home is not.
    assert.equal((await signIn(server, page, user.username, user.password, '198.18.0.99')).status, 429);
    assert.ok(signedIn(await signIn(server, await loginPage(server, 'attack:test'), user.username, user.password, home)));
  });

  it('issue-14: one shared address guessing at one account does not lock out a known-good user behind it', async () => {
    const nat = '192.0.2.200';
    const victim = await createUser(server);
    const neighbour: TestUser = await createUser(server);
    assert.ok(signedIn(await signIn(server, await loginPage(server, 'attack:test'), neighbour.username, neighbour.password, nat)));
    const page = await loginPage(server, 'attack:test');
    for (let i = 0; i < 20; i++) assert.ok(checkedAndWrong(await signIn(server, page, victim.username, 'guess', nat)));
    // The pair is locked, and the address for accounts it has no history with...
    assert.equal((await signIn(server, page, victim.username, victim.password, nat)).status, 429);
    // ...but the neighbour, who signed in from there before, is not refused.
    assert.ok(signedIn(await signIn(server, await loginPage(server, 'attack:test'), neighbour.username, neighbour.password, nat)));
  });

  it("issue-14: parallel token requests past a client's limit: exactly the limit get tokens", async () => {
    const key = generateTestKey('ES256');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], jwks: { keys: [key.publicJwk] } });
    assert.equal((await server.cli(['clients', 'update', agent.clientId, '--rate-limit', '5', '--json'])).code, 0);
    // The window is the calendar minute: start well inside one so the test cannot straddle two.
    const secondsIntoMinute = (Date.now() / 1000) % 60;
    if (secondsIntoMinute > 45) await new Promise((resolve) => setTimeout(resolve, (61 - secondsIntoMinute) * 1000));
    const responses = await Promise.all(
      Array.from({ length: 25 }, () =>
        postToken(server.issuer, {
          grant_type: 'client_credentials',
          client_assertion_type: JWT_BEARER,
          client_assertion: clientAssertion(key, agent.clientId, server.issuer),
        }),
      ),
    );
    const statuses = responses.map((r) => r.status);
    assert.deepEqual({ ok: statuses.filter((s) => s === 200).length, limited: statuses.filter((s) => s === 429).length }, { ok: 5, limited: 20 });
  });
});

describe('sign-in flood and the database pool', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ LOGIN_FAILURE_LIMIT: '100000', LOGIN_ACCOUNT_FAILURE_LIMIT: '100000' });
    await createScope(server, 'flood:test', 'Flood test');
  });
  after(() => server?.stop());

  it('issue-14: token requests all succeed during a burst of sign-ins', {
    skip: !REAL_SERVICES && 'the embedded database has one connection and no pool to drain',
  }, async () => {
    const user = await createUser(server);
    const page = await loginPage(server, 'flood:test');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'flood:test' });
    const config = await clientFor(server, agent);
    const signIns = Array.from({ length: 200 }, () => signIn(server, page, user.username, 'wrong password'));
    const tokens = Array.from({ length: 20 }, () =>
      client.clientCredentialsGrant(config, { scope: 'flood:test' }).then(
        () => 'ok',
        (err: unknown) => String(err),
      ),
    );
    const [signInResponses, tokenOutcomes] = await Promise.all([Promise.all(signIns), Promise.all(tokens)]);
    assert.deepEqual(
      tokenOutcomes,
      tokenOutcomes.map(() => 'ok'),
    );
    // Sign-ins past the hash queue's bound are told to come back, never a 500.
    for (const res of signInResponses) assert.ok(checkedAndWrong(res) || res.status === 503, `status ${res.status}`);
    const busy = signInResponses.find((r) => r.status === 503);
    if (busy) assert.equal(busy.headers.get('retry-after'), '1');
  });
});
