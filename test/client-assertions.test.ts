/**
 * private_key_jwt done right (SECURITY-TESTS R-47..R-54): every malformed, mis-addressed,
 * over-long, replayed or wrongly signed client assertion gets 401 invalid_client, never a 5xx;
 * the good ones, by ES256, EdDSA and PS256 keys, get 200.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postToken } from './helpers/browserless.ts';
import { createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { clientAssertion, generateTestKey, signJwt, type TestKey } from './helpers/jwt.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('client assertions', () => {
  let server: TestServer;
  let agent: TestAgent;
  let other: TestAgent;
  const es = generateTestKey('ES256');
  const ed = generateTestKey('EdDSA');
  const ps = generateTestKey('PS256');
  const rs = generateTestKey('RS256');
  const otherKey = generateTestKey('ES256');

  before(async () => {
    server = await startServer();
    await createScope(server, 'jobs:run', 'Run jobs');
    agent = await createAgent(server, {
      grantTypes: ['client_credentials'],
      scope: 'jobs:run',
      jwks: { keys: [es.publicJwk, ed.publicJwk, ps.publicJwk, rs.publicJwk] },
    });
    other = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'jobs:run', jwks: { keys: [otherKey.publicJwk] } });
  });
  after(() => server?.stop());

  const tokenWith = (assertion: string, clientId?: string) =>
    postToken(server.issuer, {
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: assertion,
      ...(clientId ? { client_id: clientId } : {}),
    });

  async function expectStatus(assertion: string, status: number, label: string, clientId?: string) {
    const res = await tokenWith(assertion, clientId);
    const body = (await res.json()) as { error?: string };
    assert.equal(res.status, status, `${label}: ${res.status} ${JSON.stringify(body)}`);
    if (status === 401) assert.equal(body.error, 'invalid_client', label);
  }

  const good = (key: TestKey, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
    clientAssertion(key, agent.clientId, server.issuer, claims, header);

  it('accepts ES256, EdDSA and PS256 assertions addressed to the issuer', async () => {
    for (const key of [es, ed, ps]) await expectStatus(good(key), 200, key.alg);
  });

  it('R-47: refuses assertions missing a claim or naming another client', async () => {
    const without = (claim: string) => {
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = {
        iss: agent.clientId,
        sub: agent.clientId,
        aud: server.issuer,
        jti: crypto.randomUUID(),
        iat: now,
        exp: now + 60,
      };
      delete claims[claim];
      return signJwt({ alg: 'ES256', kid: es.kid }, claims, es.privateKey);
    };
    for (const claim of ['jti', 'exp', 'sub', 'aud']) await expectStatus(without(claim), 401, `without ${claim}`);
    // Without iss the server cannot tell which client this is: 400 or 401, never 200.
    const noIss = await tokenWith(without('iss'));
    assert.ok(noIss.status === 400 || noIss.status === 401, `without iss: ${noIss.status}`);
    await expectStatus(good(es, { sub: other.clientId }), 401, 'sub is another client');
    await expectStatus(good(es, { iss: other.clientId }), 401, 'iss is another client (signed by the wrong key)');
    await expectStatus(good(es, { iss: 'agt_nobody', sub: 'agt_nobody' }), 401, 'unknown client');
  });

  it('R-48: accepts only the issuer, as a single string, for aud', async () => {
    await expectStatus(good(es, { aud: [server.issuer, 'https://other.example'] }), 401, 'aud array with issuer');
    await expectStatus(good(es, { aud: [server.issuer] }), 401, 'aud array of the issuer alone');
    await expectStatus(good(es, { aud: `${server.issuer}/token` }), 401, 'aud token endpoint');
    await expectStatus(good(es, { aud: 'https://other-as.example' }), 401, 'aud another server');
  });

  it("R-49: bounds the assertion's time window", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectStatus(good(es, { iat: now - 400, exp: now - 300 }), 401, 'expired 5 minutes ago');
    await expectStatus(good(es, { exp: now + 3600 }), 401, 'exp one hour ahead');
    await expectStatus(good(es, { iat: now - 3600, exp: now + 60 }), 401, 'iat one hour ago');
    await expectStatus(good(es, { iat: now + 8, nbf: now + 8, exp: now + 68 }), 200, 'iat and nbf 8 s ahead');
    await expectStatus(good(es, { iat: now + 90, exp: now + 150 }), 401, 'iat 90 s ahead');
    await expectStatus(good(es, { nbf: now + 90, exp: now + 150 }), 401, 'nbf 90 s ahead');
    await expectStatus(good(es, { iat: 'yesterday' }), 401, 'iat not a number');
  });

  it('R-50/R-52: a jti is accepted once per client, and the same jti works for another client', async () => {
    const jti = crypto.randomUUID();
    const first = good(es, { jti });
    await expectStatus(first, 200, 'first use');
    await expectStatus(first, 401, 'replay');
    await expectStatus(clientAssertion(otherKey, other.clientId, server.issuer, { jti }), 200, 'same jti, other client');
  });

  it('R-53: refuses alg none, HMAC with the public key, algorithms off the list, and unknown crit', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: agent.clientId, sub: agent.clientId, aud: server.issuer, iat: now, exp: now + 60 };
    await expectStatus(signJwt({ alg: 'none' }, { ...claims, jti: crypto.randomUUID() }), 401, 'alg none');
    const publicKeyAsSecret = Buffer.from(JSON.stringify(es.publicJwk));
    await expectStatus(signJwt({ alg: 'HS256', kid: es.kid }, { ...claims, jti: crypto.randomUUID() }, publicKeyAsSecret), 401, 'HS256 with the public key');
    await expectStatus(good(rs), 401, 'RS256 is not allowed unless configured');
    await expectStatus(good(es, {}, { crit: ['exp'], exp: 1 }), 401, 'crit');
    const attacker = generateTestKey('ES256');
    await expectStatus(good(attacker, {}, { jwk: attacker.publicJwk }), 401, 'embedded jwk of an attacker key');
    await expectStatus(good(attacker, {}, { jku: 'https://attacker.example/jwks' }), 401, 'jku to attacker keys');
  });

  it("issue-13: invalid_client says which rule of the assertion's shape failed, never why a signature or key did", async () => {
    const described = async (assertion: string) => {
      const res = await tokenWith(assertion);
      const body = (await res.json()) as { error: string; error_description: string };
      assert.equal(res.status, 401, JSON.stringify(body));
      assert.equal(body.error, 'invalid_client');
      return body.error_description;
    };
    const now = Math.floor(Date.now() / 1000);
    const aud = new RegExp(`^aud must be the issuer identifier \\(${server.issuer.replaceAll('.', '\\.')}\\), as a single string$`);
    assert.match(await described(good(es, { aud: `${server.issuer}/token` })), aud, 'aud: the token endpoint');
    assert.match(await described(good(es, { aud: [server.issuer] })), aud, 'aud: an array');
    assert.match(await described(good(es, { aud: 'https://other-as.example' })), aud, 'aud: another server');
    assert.match(await described(good(es, { exp: now + 3600 })), /may be valid for at most 300 seconds/, 'a one-hour assertion');
    assert.match(await described(good(es, { iat: now - 400, exp: now - 300 })), /^exp: the client assertion has expired/);
    assert.match(await described(good(es, { iat: now + 90, exp: now + 150 })), /^iat/);
    assert.match(await described(good(rs)), /^alg: /);
    // sub names the client, so iss is then the one that disagrees with it.
    assert.match(await described(good(es, { sub: other.clientId })), /^iss must be the client_id$/);
    assert.match(await described(good(es, {}, { typ: 'at+jwt' })), /^typ must be client-authentication\+jwt or JWT/, 'an access token is no assertion');
    await expectStatus(good(es, {}, { typ: 'client-authentication+jwt' }), 200, 'rfc7523bis explicit typing');
    const once = good(es);
    assert.equal((await tokenWith(once)).status, 200);
    assert.match(await described(once), /^jti: this client assertion was already used/);
    // Keys and signatures: nothing more than oidc-provider ever said.
    for (const [label, assertion] of [
      ["another client's key", good(otherKey)],
      ['a foreign key under our kid', good({ ...otherKey, kid: es.kid })],
      ['an unknown client', good(es, { iss: 'agt_nobody', sub: 'agt_nobody' })],
    ] as const)
      assert.equal(await described(assertion), 'client authentication failed', label);

    const r = await server.cli(['audit', 'export', '--client', agent.clientId, '--json']);
    const rows = (JSON.parse(r.stdout) as { events: { event_type: string; outcome: string; details: { rule?: string } }[] }).events.filter(
      (e) => e.event_type === 'client.authentication_failed',
    );
    const rules = new Set(rows.map((e) => e.details.rule));
    for (const rule of ['aud', 'lifetime', 'exp', 'iat', 'alg', 'typ', 'jti', 'credentials'])
      assert.ok(rules.has(rule), `audited ${rule}: ${[...rules].join(' ')}`);
    assert.ok(rows.every((e) => e.outcome === 'failure'));
    assert.match(server.output(), /"rule":"aud".*"msg":"client authentication failed"|"msg":"client authentication failed".*"rule":"aud"/);
  });

  it('issue-13: an assertion spent on a refused request stays spent, though the refusal rolls back', async () => {
    const assertion = good(es);
    // Authenticated, then refused: this agent may not use the refresh_token grant.
    const refused = await postToken(server.issuer, {
      grant_type: 'refresh_token',
      refresh_token: 'not-a-refresh-token',
      client_assertion_type: JWT_BEARER,
      client_assertion: assertion,
    });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: string }).error, 'unauthorized_client');
    await expectStatus(assertion, 401, 'the same assertion again');
  });

  it('issue-13: Basic credentials with an empty password are 401 invalid_client with WWW-Authenticate', async () => {
    const res = await fetch(`${server.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${agent.clientId}:`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_client');
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm=/);
  });

  it('R-54: refuses foreign keys and survives odd kids', async () => {
    await expectStatus(good(otherKey), 401, "signed by another client's key");
    await expectStatus(good({ ...otherKey, kid: es.kid }), 401, 'foreign key under our kid');
    for (const kid of ['../../etc/passwd', "' OR 1=1 --", 'k'.repeat(5000), '\u0000']) {
      const res = await tokenWith(good(es, {}, { kid }));
      assert.ok(res.status === 400 || res.status === 401, `kid ${kid.slice(0, 20)}: ${res.status}`);
    }
    const noKid = await tokenWith(
      signJwt(
        { alg: 'ES256' },
        {
          iss: agent.clientId,
          sub: agent.clientId,
          aud: server.issuer,
          jti: crypto.randomUUID(),
          iat: Math.floor(Date.now() / 1000),
          exp: Math.floor(Date.now() / 1000) + 60,
        },
        es.privateKey,
      ),
    );
    assert.ok(noKid.status === 200 || noKid.status === 401, `no kid: ${noKid.status}`);
  });
});

describe('client assertions with RS256 allowed', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ CLIENT_AUTH_ALLOW_RS256: 'true', CLIENT_ASSERTION_MAX_LIFETIME: '30' });
  });
  after(() => server?.stop());

  it('accepts RS256 when configured, and applies a configured lifetime cap', async () => {
    const rs = generateTestKey('RS256');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], jwks: { keys: [rs.publicJwk] } });
    const send = (claims: Record<string, unknown>) =>
      postToken(server.issuer, {
        grant_type: 'client_credentials',
        client_assertion_type: JWT_BEARER,
        client_assertion: clientAssertion(rs, agent.clientId, server.issuer, claims),
      });
    const now = Math.floor(Date.now() / 1000);
    assert.equal((await send({ exp: now + 30 })).status, 200);
    assert.equal((await send({ exp: now + 60 })).status, 401);
  });
});
