/**
 * DPoP at the authorization server (RFC 9449; SECURITY-TESTS DPoP; issue 17): proofs accepted for
 * every grant with openid-client's DPoP handle, tokens bound (token_type DPoP, cnf.jkt), dpop_jkt
 * at the authorization and PAR endpoints, clients bound by dpop_bound_access_tokens or by the
 * deployment's switch, public clients' refresh tokens bound to the key (another key refused and
 * audited) with the retry rule intact, nonces, and proofs single-use across restarts and instances.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize, browse, codeFlowTokens, CookieJar, csrfOf, followOnIssuer, postForm, tokenAnswer } from './helpers/browserless.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { clientAssertion, dpopProof, generateTestKey, thumbprintOf, type TestKey } from './helpers/jwt.ts';
import { loseDeploymentRedis, REAL_SERVICES, spawnServer, startServer, stopProcess, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

const dpopKeyPair = () => crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']) as Promise<client.CryptoKeyPair>;

/** The whole code flow with PKCE and a DPoP handle (dpop_jkt sent when asked). */
async function dpopCodeFlow(
  server: Pick<TestServer, 'issuer'>,
  config: client.Configuration,
  user: TestUser,
  DPoP: client.DPoPHandle,
  options: { scope: string; bindCode?: boolean; redeemWith?: client.DPoPHandle } = { scope: 'notes:read' },
) {
  const verifier = client.randomPKCECodeVerifier();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: options.scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...(options.bindCode ? { dpop_jkt: await DPoP.calculateThumbprint() } : {}),
  });
  const { callback } = await authorize(server.issuer, url, user);
  return client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, undefined, { DPoP: options.redeemWith ?? DPoP });
}

const isError = (code: string) => (err: client.ResponseBodyError) => err.error === code;

async function auditTypes(server: TestServer, clientId: string): Promise<string[]> {
  const events = JSON.parse((await server.cli(['audit', 'export', '--client', clientId, '--json'])).stdout).events as { event_type: string }[];
  return events.map((e) => e.event_type);
}

describe('DPoP at the authorization server', () => {
  let server: TestServer;
  let user: TestUser;
  let confidentialKey: TestKey;
  let machine: TestAgent;

  before(async () => {
    server = await startServer();
    await createScope(server, 'notes:read', 'Read your notes');
    user = await createUser(server);
    confidentialKey = generateTestKey('ES256');
    machine = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read', jwks: { keys: [confidentialKey.publicJwk] } });
  });
  after(() => server?.stop());

  const ccParams = (extra: Record<string, string> = {}) => ({
    grant_type: 'client_credentials',
    scope: 'notes:read',
    client_assertion_type: JWT_BEARER,
    client_assertion: clientAssertion(confidentialKey, machine.clientId, server.issuer),
    ...extra,
  });

  it('publishes dpop_signing_alg_values_supported: asymmetric algorithms only', async () => {
    const metadata = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.deepEqual(metadata.dpop_signing_alg_values_supported, ['ES256', 'EdDSA', 'Ed25519', 'PS256']);
  });

  it('binds a public client’s code flow and refresh tokens to its key (code + PKCE + DPoP, openid-client)', async () => {
    const agent = await createAgent(server, { public: true, redirectUris: [REDIRECT_URI], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const DPoP = client.getDPoPHandle(config, await dpopKeyPair());
    const tokens = await dpopCodeFlow(server, config, user, DPoP, { scope: 'notes:read', bindCode: true });
    assert.equal(tokens.token_type, 'dpop');
    const jkt = await DPoP.calculateThumbprint();
    const introspected = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(introspected.active, true);
    assert.deepEqual(introspected.cnf, { jkt });
    assert.equal(introspected.token_type, 'DPoP');

    // The refresh token is bound too: with the key it works, and the new access token is bound.
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP });
    assert.equal(refreshed.token_type, 'dpop');
    assert.deepEqual((await client.tokenIntrospection(config, refreshed.access_token)).cnf, { jkt });

    // Retry rule: the predecessor with the same key gets the same successor.
    const retried = await client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP });
    assert.equal(retried.refresh_token, refreshed.refresh_token);

    // A stolen refresh token: with another key, or none, refused; the agent keeps its grant.
    const thief = client.getDPoPHandle(config, await dpopKeyPair());
    await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token!, undefined, { DPoP: thief }), isError('invalid_grant'));
    await assert.rejects(client.refreshTokenGrant(config, refreshed.refresh_token!), isError('invalid_grant'));
    // …also as a retry of the predecessor inside the window.
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP: thief }), isError('invalid_grant'));
    const next = await client.refreshTokenGrant(config, refreshed.refresh_token!, undefined, { DPoP });
    assert.equal((await client.tokenIntrospection(config, next.access_token)).active, true);
    const types = await auditTypes(server, agent.clientId);
    assert.equal(types.filter((t) => t === 'refresh_token.key_mismatch').length, 3, types.join(','));
    assert.ok(!types.includes('grant.revoked'), 'a stolen bound token does not end the agent’s grant');
  });

  it('binds a confidential client’s access tokens, not its refresh tokens (authenticated by private_key_jwt)', async () => {
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const DPoP = client.getDPoPHandle(config, await dpopKeyPair());
    const tokens = await dpopCodeFlow(server, config, user, DPoP, { scope: 'notes:read' });
    assert.equal(tokens.token_type, 'dpop');
    assert.deepEqual((await client.tokenIntrospection(config, tokens.access_token)).cnf, { jkt: await DPoP.calculateThumbprint() });
    // A retry must be the same request: under another key its kept (bound) answer is not for it.
    const other = client.getDPoPHandle(config, await dpopKeyPair());
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP });
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP: other }), isError('invalid_grant'));
    const again = await client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP });
    assert.equal(again.access_token, refreshed.access_token);
  });

  it('binds client credentials tokens; introspection shows cnf.jkt', async () => {
    const key = generateTestKey('ES256');
    const proof = dpopProof(key, 'POST', `${server.issuer}/token`);
    const answer = await tokenAnswer(server.issuer, ccParams(), proof);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.token_type, 'DPoP');
    const config = await clientFor(server, { ...machine, privateKey: undefined });
    const introspection = await fetch(`${server.issuer}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        token: String(answer.body.access_token),
        client_assertion_type: JWT_BEARER,
        client_assertion: clientAssertion(confidentialKey, machine.clientId, server.issuer),
      }),
    });
    const body = (await introspection.json()) as { active: boolean; cnf?: { jkt: string } };
    assert.equal(body.active, true);
    assert.deepEqual(body.cnf, { jkt: thumbprintOf(key) });
    assert.ok(config);
  });

  it('works with openid-client’s client credentials and DPoP handle (EdDSA key)', async () => {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])) as unknown as client.CryptoKeyPair;
    const DPoP = client.getDPoPHandle(config, pair);
    const tokens = await client.clientCredentialsGrant(config, { scope: 'notes:read' }, { DPoP });
    assert.equal(tokens.token_type, 'dpop');
    assert.deepEqual((await client.tokenIntrospection(config, tokens.access_token)).cnf, { jkt: await DPoP.calculateThumbprint() });
  });

  it('refuses a replayed proof, a proof for another URL or method, and a symmetric or RS256 proof: invalid_dpop_proof', async () => {
    const key = generateTestKey('ES256');
    const proof = dpopProof(key, 'POST', `${server.issuer}/token`);
    assert.equal((await tokenAnswer(server.issuer, ccParams(), proof)).status, 200);
    const replayed = await tokenAnswer(server.issuer, ccParams(), proof);
    assert.equal(replayed.status, 400);
    assert.equal(replayed.body.error, 'invalid_dpop_proof');
    assert.match(String(replayed.body.error_description), /already used/);
    const cases: [string, string][] = [
      ['another URL', dpopProof(key, 'POST', `${server.issuer}/token/introspection`)],
      ['another method', dpopProof(key, 'GET', `${server.issuer}/token`)],
      ['an old iat', dpopProof(key, 'POST', `${server.issuer}/token`, { claims: { iat: Math.floor(Date.now() / 1000) - 3600 } })],
      ['RS256', dpopProof(generateTestKey('RS256'), 'POST', `${server.issuer}/token`)],
      ['no jti', dpopProof(key, 'POST', `${server.issuer}/token`, { claims: { jti: undefined } })],
      ['typ JWT', dpopProof(key, 'POST', `${server.issuer}/token`, { header: { typ: 'JWT' } })],
    ];
    for (const [what, bad] of cases) {
      const answer = await tokenAnswer(server.issuer, ccParams(), bad);
      assert.equal(answer.status, 400, what);
      assert.ok(['invalid_dpop_proof', 'use_dpop_nonce'].includes(String(answer.body.error)), `${what}: ${JSON.stringify(answer.body)}`);
    }
  });

  // The proof's jti is claimed in the client assertion's statement, ahead of oidc-provider's check.
  it('spends a proof’s jti only when its check comes: not with a refused assertion, not for a proof refused before it', async () => {
    const key = generateTestKey('ES256');
    const jti = randomBytes(12).toString('base64url');
    const proof = dpopProof(key, 'POST', `${server.issuer}/token`, { claims: { jti } });
    // A replayed assertion ends the request before the proof is looked at: the proof stays good.
    const assertion = clientAssertion(confidentialKey, machine.clientId, server.issuer);
    assert.equal((await tokenAnswer(server.issuer, ccParams({ client_assertion: assertion }))).status, 200);
    const refused = await tokenAnswer(server.issuer, ccParams({ client_assertion: assertion }), proof);
    assert.equal(refused.body.error, 'invalid_client');
    // A proof for another URL with the same jti is refused before its jti is checked: not spent either.
    const elsewhere = await tokenAnswer(server.issuer, ccParams(), dpopProof(key, 'POST', `${server.issuer}/elsewhere`, { claims: { jti } }));
    assert.equal(elsewhere.body.error, 'invalid_dpop_proof');
    const accepted = await tokenAnswer(server.issuer, ccParams(), proof);
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.equal((await tokenAnswer(server.issuer, ccParams(), proof)).body.error, 'invalid_dpop_proof');
  });

  it('takes a proof whose jti is its assertion’s as one request’s own marker; neither can be used again', async () => {
    const key = generateTestKey('ES256');
    const jti = randomBytes(12).toString('base64url');
    const assertion = clientAssertion(confidentialKey, machine.clientId, server.issuer, { jti });
    const proof = dpopProof(key, 'POST', `${server.issuer}/token`, { claims: { jti } });
    const answer = await tokenAnswer(server.issuer, ccParams({ client_assertion: assertion }), proof);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.token_type, 'DPoP');
    assert.equal((await tokenAnswer(server.issuer, ccParams(), proof)).body.error, 'invalid_dpop_proof');
    const fresh = dpopProof(key, 'POST', `${server.issuer}/token`);
    assert.equal((await tokenAnswer(server.issuer, ccParams({ client_assertion: assertion }), fresh)).body.error, 'invalid_client');
  });

  it('accepts exactly one of many concurrent requests with one proof (each with its own assertion)', async () => {
    const proof = dpopProof(generateTestKey('ES256'), 'POST', `${server.issuer}/token`);
    const answers = await Promise.all(Array.from({ length: 12 }, () => tokenAnswer(server.issuer, ccParams(), proof)));
    assert.equal(answers.filter((r) => r.status === 200).length, 1, answers.map((r) => r.status).join(','));
    for (const refused of answers.filter((r) => r.status !== 200)) assert.equal(refused.body.error, 'invalid_dpop_proof');
  });

  it('holds a client registered with --dpop required to proofs (RFC 9449 §5.2), and can be set back', async () => {
    const key = generateTestKey('ES256');
    const made = await server.cli([
      'clients',
      'create',
      '--name',
      'Bound agent',
      '--grant-types',
      'client_credentials',
      '--scope',
      'notes:read',
      '--dpop',
      'required',
      '--json',
      '--jwks-file',
      await jwksFile(key),
    ]);
    assert.equal(made.code, 0, made.stderr);
    const agent = JSON.parse(made.stdout) as { client_id: string; dpop_bound_access_tokens?: boolean };
    assert.equal(agent.dpop_bound_access_tokens, true);
    const params = () => ({
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: clientAssertion(key, agent.client_id, server.issuer),
    });
    const without = await tokenAnswer(server.issuer, params());
    assert.equal(without.status, 400);
    assert.equal(without.body.error, 'invalid_dpop_proof');
    const proofKey = generateTestKey('EdDSA');
    assert.equal((await tokenAnswer(server.issuer, params(), dpopProof(proofKey, 'POST', `${server.issuer}/token`))).status, 200);
    const updated = await server.cli(['clients', 'update', agent.client_id, '--dpop', 'optional', '--json']);
    assert.equal(updated.code, 0, updated.stderr);
    assert.equal((JSON.parse(updated.stdout) as { dpop_bound_access_tokens?: boolean }).dpop_bound_access_tokens, undefined);
    assert.equal((await tokenAnswer(server.issuer, params())).status, 200);
    const bad = await server.cli(['clients', 'update', agent.client_id, '--dpop', 'maybe']);
    assert.notEqual(bad.code, 0);
  });

  it('binds the code to dpop_jkt at the authorization endpoint and to the proof key at PAR (RFC 9449 §10)', async () => {
    const agent = await createAgent(server, { public: true, redirectUris: [REDIRECT_URI], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    const DPoP = client.getDPoPHandle(config, await dpopKeyPair());
    const other = client.getDPoPHandle(config, await dpopKeyPair());
    await assert.rejects(dpopCodeFlow(server, config, user, DPoP, { scope: 'notes:read', bindCode: true, redeemWith: other }), isError('invalid_grant'));

    // PAR with a proof: the request is bound to that key, whatever the code is redeemed with.
    const verifier = client.randomPKCECodeVerifier();
    const url = await client.buildAuthorizationUrlWithPAR(
      config,
      { redirect_uri: REDIRECT_URI, scope: 'notes:read', code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' },
      { DPoP },
    );
    const { callback } = await authorize(server.issuer, url, user);
    await assert.rejects(client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, undefined, { DPoP: other }), isError('invalid_grant'));
    const ok = await dpopCodeFlow(server, config, user, DPoP, { scope: 'notes:read', bindCode: true });
    assert.equal(ok.token_type, 'dpop');
  });

  it('accepts dpop_bound_access_tokens in RFC 7591 registration', async () => {
    // Registration needs an initial access token here (no open registration on this server).
    const issued = await server.cli(['registration-tokens', 'create', '--json']);
    assert.equal(issued.code, 0, issued.stderr);
    const { token } = JSON.parse(issued.stdout) as { token: string };
    const res = await fetch(`${server.issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        client_name: 'Registered agent',
        redirect_uris: [REDIRECT_URI],
        token_endpoint_auth_method: 'none',
        dpop_bound_access_tokens: true,
      }),
    });
    const body = (await res.json()) as { client_id: string; dpop_bound_access_tokens?: boolean };
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.dpop_bound_access_tokens, true);
    const agent = { clientId: body.client_id, metadata: body };
    const config = await clientFor(server, agent);
    await assert.rejects(codeFlowTokens(server.issuer, config, user, { scope: 'notes:read', redirectUri: REDIRECT_URI }), isError('invalid_dpop_proof'));
  });

  // Last: it leaves the suite's server stopped (its deployment is dropped by after()).
  it('keeps a spent proof spent across a restart', async () => {
    const key = generateTestKey('ES256');
    const proof = dpopProof(key, 'POST', `${server.issuer}/token`);
    assert.equal((await tokenAnswer(server.issuer, ccParams(), proof)).status, 200);
    await server.halt();
    const restarted = await spawnServer(server.env);
    try {
      const replayed = await tokenAnswer(server.issuer, ccParams(), proof);
      assert.equal(replayed.body.error, 'invalid_dpop_proof');
    } finally {
      await stopProcess(restarted.child);
    }
  });
});

async function jwksFile(key: TestKey): Promise<string> {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'agentauth-jwks-')), 'jwks.json');
  writeFileSync(file, JSON.stringify({ keys: [key.publicJwk] }));
  return file;
}

describe('a deployment that requires DPoP nonces and DPoP of public clients', () => {
  let server: TestServer;
  let user: TestUser;

  before(async () => {
    server = await startServer({ DPOP_REQUIRE_NONCE: 'true', DPOP_REQUIRED_FOR_PUBLIC_CLIENTS: 'true' });
    await createScope(server, 'notes:read', 'Read your notes');
    user = await createUser(server);
  });
  after(() => server?.stop());

  it('refuses a public client’s token request without a proof, and one without a nonce with use_dpop_nonce', async () => {
    const agent = await createAgent(server, { public: true, redirectUris: [REDIRECT_URI], scope: 'notes:read' });
    const config = await clientFor(server, agent);
    await assert.rejects(codeFlowTokens(server.issuer, config, user, { scope: 'notes:read', redirectUri: REDIRECT_URI }), isError('invalid_dpop_proof'));
    // openid-client answers use_dpop_nonce by retrying once with the nonce it was given.
    const DPoP = client.getDPoPHandle(config, await dpopKeyPair());
    const tokens = await dpopCodeFlow(server, config, user, DPoP, { scope: 'notes:read' });
    assert.equal(tokens.token_type, 'dpop');
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!, undefined, { DPoP });
    assert.equal(refreshed.token_type, 'dpop');
  });

  it('still lets a user sign in to /account (agentauth’s own client is exempt from the switch)', async () => {
    const jar = new CookieJar();
    const page = await followOnIssuer(jar, server.issuer, await browse(jar, `${server.issuer}/account`));
    const html = await page.text();
    const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)![1]!;
    const res = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, `${server.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
    );
    const account = await res.text();
    assert.equal(res.status, 200, account);
    assert.match(account, /Your connected agents/);
  });

  it('answers a proof without a nonce with use_dpop_nonce and a DPoP-Nonce header', async () => {
    const key = generateTestKey('ES256');
    const confidential = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read', jwks: { keys: [key.publicJwk] } });
    const params = () => ({
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: clientAssertion(key, confidential.clientId, server.issuer),
    });
    const proofKey = generateTestKey('ES256');
    const first = await tokenAnswer(server.issuer, params(), dpopProof(proofKey, 'POST', `${server.issuer}/token`));
    assert.equal(first.status, 400);
    assert.equal(first.body.error, 'use_dpop_nonce');
    assert.ok(first.nonce);
    const second = await tokenAnswer(server.issuer, params(), dpopProof(proofKey, 'POST', `${server.issuer}/token`, { nonce: first.nonce }));
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const forged = await tokenAnswer(
      server.issuer,
      params(),
      dpopProof(proofKey, 'POST', `${server.issuer}/token`, { nonce: randomBytes(32).toString('base64url') }),
    );
    assert.equal(forged.body.error, 'use_dpop_nonce');
    // Confidential clients are not held to DPoP by the public-client switch.
    assert.equal((await tokenAnswer(server.issuer, params())).status, 200);
  });
});

describe('DPoP across two instances', {
  skip: REAL_SERVICES ? false : 'needs two server processes on real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)',
}, () => {
  let cluster: TestCluster;
  let key: TestKey;
  let agent: TestAgent;

  before(async () => {
    cluster = await startCluster(2);
    await createScope(cluster, 'notes:read', 'Read your notes');
    key = generateTestKey('ES256');
    agent = await createAgent(cluster, { grantTypes: ['client_credentials'], scope: 'notes:read', jwks: { keys: [key.publicJwk] } });
  });
  after(() => cluster?.stop());

  const params = () => ({
    grant_type: 'client_credentials',
    client_assertion_type: JWT_BEARER,
    client_assertion: clientAssertion(key, agent.clientId, cluster.issuer),
  });

  // Through the round-robin proxy (htu must name the issuer): consecutive requests alternate instances.
  it('accepts a nonce one instance gave at the other', async () => {
    const a = cluster.issuer;
    const b = cluster.issuer;
    const proofKey = generateTestKey('ES256');
    const old = { claims: { iat: Math.floor(Date.now() / 1000) - 3600 } };
    const challenged = await tokenAnswer(a, params(), dpopProof(proofKey, 'POST', `${cluster.issuer}/token`, old));
    assert.equal(challenged.body.error, 'use_dpop_nonce');
    const nonce = challenged.nonce!;
    const answered = await tokenAnswer(b, params(), dpopProof(proofKey, 'POST', `${cluster.issuer}/token`, { ...old, nonce }));
    assert.equal(answered.status, 200, JSON.stringify(answered.body));
  });

  it('refuses a proof spent at one instance at the other, also after Redis is flushed', async () => {
    const a = cluster.issuer;
    const b = cluster.issuer;
    const proof = dpopProof(generateTestKey('ES256'), 'POST', `${cluster.issuer}/token`);
    assert.equal((await tokenAnswer(a, params(), proof)).status, 200);
    assert.equal((await tokenAnswer(b, params(), proof)).body.error, 'invalid_dpop_proof');
    await loseDeploymentRedis(cluster.env);
    assert.equal((await tokenAnswer(a, params(), proof)).body.error, 'invalid_dpop_proof');
    // Twenty at once across both instances with one fresh proof: exactly one is accepted.
    const fresh = dpopProof(generateTestKey('ES256'), 'POST', `${cluster.issuer}/token`);
    const answers = await Promise.all(Array.from({ length: 20 }, () => tokenAnswer(cluster.issuer, params(), fresh)));
    assert.equal(answers.filter((r) => r.status === 200).length, 1, answers.map((r) => r.status).join(','));
  });
});

describe('DPoP nonce secrets rotate like cookie keys', () => {
  const oldSecret = randomBytes(32).toString('base64url');
  const newSecret = randomBytes(32).toString('base64url');
  let server: TestServer;

  before(async () => {
    server = await startServer({ DPOP_NONCE_SECRETS: oldSecret, DPOP_REQUIRE_NONCE: 'true' });
    await createScope(server, 'notes:read', 'Read your notes');
  });
  after(() => server?.stop());

  it('accepts a nonce of the previous secret after a rotation, and refuses it once that secret is dropped', async () => {
    const key = generateTestKey('ES256');
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read', jwks: { keys: [key.publicJwk] } });
    const params = () => ({
      grant_type: 'client_credentials',
      client_assertion_type: JWT_BEARER,
      client_assertion: clientAssertion(key, agent.clientId, server.issuer),
    });
    const proofKey = generateTestKey('ES256');
    const proof = (nonce?: string) => dpopProof(proofKey, 'POST', `${server.issuer}/token`, nonce ? { nonce } : {});
    const nonce = (await tokenAnswer(server.issuer, params(), proof())).nonce!;
    assert.ok(nonce);

    const restartWith = async (secrets: string) => {
      await server.halt();
      const next = await spawnServer({ ...server.env, DPOP_NONCE_SECRETS: secrets });
      return () => stopProcess(next.child);
    };
    let stop = await restartWith(`${newSecret},${oldSecret}`);
    try {
      const answer = await tokenAnswer(server.issuer, params(), proof(nonce));
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.notEqual(answer.nonce, nonce, 'new nonces come from the new secret');
    } finally {
      await stop();
    }
    stop = await restartWith(newSecret);
    try {
      const answer = await tokenAnswer(server.issuer, params(), proof(nonce));
      assert.equal(answer.body.error, 'use_dpop_nonce');
    } finally {
      await stop();
    }
  });
});
