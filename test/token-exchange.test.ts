/**
 * Token exchange (RFC 8693) and delegation chains: who may act is the operator's delegate list
 * (or the resource-server rule), the same checks run with or without actor_token, the new token
 * only narrows, `act` nests and shows in introspection and JWTs, and revoking the user's grant
 * kills every token exchanged from it. Keycloak's bugs are the regression cases: #50690 (may_act
 * not gating), #52691 (actor checks skipped without actor_token), #53029 (introspection without act).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import * as client from 'openid-client';
import { createResourceServer, GRANT_REVOKED_EVENT } from '../src/resource-server/index.ts';
import { authorize, browse, csrfOf, followOnIssuer, postForm, signInToAccount } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { REAL_SERVICES, startServer, type TestServer } from './helpers/server.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { createTestHost, testHostEnv, testHostsUnavailable } from './helpers/test-host.ts';
import { waitFor } from './helpers/wait.ts';
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, tokenExchange } from './helpers/token-exchange.ts';

const ACCESS_TOKEN = ACCESS_TOKEN_TYPE;
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const NOTES_API = 'https://notes.example.com/';
const CALENDAR_API = 'https://calendar.example.com/';
const MCP_SERVER = 'https://mcp.example.com/';
const SEARCH_API = 'https://search.example.com/';

const exchange = (config: client.Configuration, params: Record<string, string>) => tokenExchange(config, params);

const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

async function userToken(server: TestServer, config: client.Configuration, user: TestUser, scope: string, resource: string) {
  const verifier = client.randomPKCECodeVerifier();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: 'http://127.0.0.1/cb',
    scope,
    resource,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  const result = await authorize(server.issuer, url, user);
  const tokens = await client.authorizationCodeGrant(config, result.callback, { pkceCodeVerifier: verifier }, { resource });
  return { tokens, consentHtml: result.consentHtml };
}

const auditRows = async (server: TestServer, clientId: string) =>
  JSON.parse((await server.cli(['audit', 'export', '--client', clientId, '--json'])).stdout).events as {
    event_type: string;
    client_id: string;
    grant_id: string | null;
    outcome: string;
    summary: string;
    details: Record<string, unknown>;
  }[];

describe('token exchange and delegation chains (RFC 8693)', () => {
  let server: TestServer;
  let user: TestUser;
  /** Reporting Agent: the user's consent is to it. */
  let planner: TestAgent;
  let plannerConfig: client.Configuration;
  /** Coding Agent: Reporting Agent's delegate. */
  let coder: TestAgent;
  let coderConfig: client.Configuration;
  /** Review Agent: Coding Agent's delegate. */
  let reviewer: TestAgent;
  let reviewerConfig: client.Configuration;
  /** Registered for the grant, named as nobody's delegate. */
  let stranger: TestAgent;
  let strangerConfig: client.Configuration;
  let notesRs: client.Configuration;
  let mcpRs: TestAgent;
  let mcpConfig: client.Configuration;
  let searchRs: client.Configuration;
  let searchClient: TestAgent;
  let subject: client.TokenEndpointResponse;

  const exchanger = (name: string, scope: string, extra: string[] = []) => createAgent(server, { name, grantTypes: [TOKEN_EXCHANGE, ...extra], scope });

  before(async () => {
    server = await startServer();
    for (const [name, text] of [
      ['notes:read', 'Read your notes'],
      ['notes:write', 'Change your notes'],
      ['calendar:read', 'See your calendar'],
      ['search:query', 'Search for you'],
    ])
      await createScope(server, name!, text!);
    const notesClient = await createAgent(server, { name: 'Notes API', grantTypes: ['client_credentials'] });
    notesRs = await clientFor(server, notesClient);
    searchClient = await createAgent(server, { name: 'Search API', grantTypes: ['client_credentials'] });
    searchRs = await clientFor(server, searchClient);
    // The MCP server introspects its tokens and may call the search API with search:query.
    mcpRs = await exchanger('MCP server', 'search:query', ['client_credentials']);
    mcpConfig = await clientFor(server, mcpRs);
    for (const args of [
      [NOTES_API, '--scopes', 'notes:read notes:write', '--client', notesClient.clientId],
      [CALENDAR_API, '--scopes', 'calendar:read', '--token-format', 'jwt'],
      [MCP_SERVER, '--scopes', 'search:query', '--access-token-ttl', '60', '--client', mcpRs.clientId],
      [SEARCH_API, '--scopes', 'search:query', '--access-token-ttl', '3600', '--client', searchClient.clientId],
    ]) {
      const made = await server.cli(['resources', 'create', ...args!, '--json']);
      assert.equal(made.code, 0, made.stderr);
    }

    planner = await createAgent(server, {
      name: 'Reporting Agent',
      redirectUris: ['http://127.0.0.1/cb'],
      scope: 'notes:read notes:write calendar:read search:query',
    });
    plannerConfig = await clientFor(server, planner);
    coder = await exchanger('Coding Agent', 'notes:read calendar:read', ['client_credentials']);
    coderConfig = await clientFor(server, coder);
    reviewer = await exchanger('Review Agent', 'notes:read');
    reviewerConfig = await clientFor(server, reviewer);
    stranger = await exchanger('Stranger', 'notes:read notes:write', ['client_credentials']);
    strangerConfig = await clientFor(server, stranger);
    for (const [from, to] of [
      [planner, coder],
      [coder, reviewer],
    ] as const) {
      const r = await server.cli(['clients', 'update', from.clientId, '--delegate-to', to.clientId, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).delegates, [to.clientId]);
    }
    user = await createUser(server);
    const first = await userToken(server, plannerConfig, user, 'notes:read notes:write', NOTES_API);
    subject = first.tokens;
    assert.match(first.consentHtml, /may hand parts of this to <strong>Coding Agent<\/strong>/);
  });
  after(() => server?.stop());

  it('advertises the grant in the metadata, and only a client registered for it may use it', async () => {
    const metadata = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as { grant_types_supported: string[] };
    assert.ok(metadata.grant_types_supported.includes(TOKEN_EXCHANGE));
    const unregistered = await clientFor(server, await createAgent(server, { grantTypes: ['client_credentials'] }));
    const r = await exchange(unregistered, { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'unauthorized_client');
  });

  it('refuses a delegate that is not registered for the grant, and names no client twice', async () => {
    const plain = await createAgent(server, { grantTypes: ['client_credentials'] });
    const r = await server.cli(['clients', 'update', planner.clientId, '--delegate-to', plain.clientId]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not registered for the token exchange grant/);
    const self = await server.cli(['clients', 'update', coder.clientId, '--delegate-to', coder.clientId]);
    assert.equal(self.code, 1);
  });

  it("hands a delegate a narrower token of the user's, with act, and no refresh token", async () => {
    const r = await exchange(coderConfig, { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN, scope: 'notes:read' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.issued_token_type, ACCESS_TOKEN);
    assert.equal(String(r.body.token_type).toLowerCase(), 'bearer');
    assert.equal(r.body.scope, 'notes:read');
    assert.equal(r.body.refresh_token, undefined);
    assert.ok(Number(r.body.expires_in) <= Number(subject.expires_in), 'no longer than the subject token has left');
    // Keycloak #53029: introspection carries act, for the token's client and for its resource server.
    for (const introspector of [coderConfig, notesRs]) {
      const info = await client.tokenIntrospection(introspector, String(r.body.access_token));
      assert.equal(info.active, true);
      assert.equal(info.sub, user.id);
      assert.equal(info.client_id, coder.clientId);
      assert.equal(info.aud, NOTES_API);
      assert.equal(info.scope, 'notes:read');
      assert.deepEqual(info.act, { sub: coder.clientId, act: { sub: planner.clientId } });
      assert.deepEqual(info.may_act, { sub: reviewer.clientId }, 'the Coding Agent may hand it on to its own delegate');
    }
    // The user's own token says who may act for it (RFC 8693 §4.4).
    const own = await client.tokenIntrospection(plannerConfig, subject.access_token);
    assert.deepEqual(own.may_act, { sub: coder.clientId });
    assert.equal(own.act, undefined);
  });

  it('issue-17: binds the exchanged token to the delegate’s DPoP key, and holds a DPoP-bound delegate to proofs', async () => {
    const keyPair = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])) as client.CryptoKeyPair;
    const DPoP = client.getDPoPHandle(coderConfig, keyPair);
    const params = { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN, scope: 'notes:read' };
    const bound = await client.genericGrantRequest(coderConfig, TOKEN_EXCHANGE, params, { DPoP });
    assert.equal(bound.token_type, 'dpop');
    const info = await client.tokenIntrospection(notesRs, bound.access_token);
    assert.deepEqual(info.cnf, { jkt: await DPoP.calculateThumbprint() });
    assert.deepEqual(info.act, { sub: coder.clientId, act: { sub: planner.clientId } });
    const made = await server.cli(['clients', 'update', coder.clientId, '--dpop', 'required', '--json']);
    assert.equal(made.code, 0, made.stderr);
    try {
      const refused = await exchange(coderConfig, params);
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, 'invalid_dpop_proof');
      assert.equal((await client.genericGrantRequest(coderConfig, TOKEN_EXCHANGE, params, { DPoP })).token_type, 'dpop');
    } finally {
      assert.equal((await server.cli(['clients', 'update', coder.clientId, '--dpop', 'optional'])).code, 0);
    }
  });

  it('refuses a client nobody named as delegate, with or without actor_token, and audits it (Keycloak #50690, #52691)', async () => {
    const without = await exchange(strangerConfig, { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(without.status, 400);
    assert.equal(without.body.error, 'invalid_request');
    assert.match(String(without.body.error_description), /not allowed to act/);
    const own = await client.clientCredentialsGrant(strangerConfig, { scope: 'notes:read' });
    const withActor = await exchange(strangerConfig, {
      subject_token: subject.access_token,
      subject_token_type: ACCESS_TOKEN,
      actor_token: own.access_token,
      actor_token_type: ACCESS_TOKEN,
    });
    assert.equal(withActor.status, 400);
    assert.equal(withActor.body.error, 'invalid_request');
    assert.match(String(withActor.body.error_description), /not allowed to act/);
    const refused = (await auditRows(server, stranger.clientId)).filter((e) => e.event_type === 'token_exchange.refused');
    assert.equal(refused.length, 2);
    assert.equal(refused[0]!.outcome, 'failure');
    assert.deepEqual(refused[0]!.details.chain, [planner.clientId, stranger.clientId]);
  });

  it('checks actor_token: one proving the authenticated client passes, a forged or foreign one is refused', async () => {
    const own = await client.clientCredentialsGrant(coderConfig, { scope: 'notes:read' });
    const base = { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN };
    const ok = await exchange(coderConfig, { ...base, actor_token: own.access_token, actor_token_type: ACCESS_TOKEN });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const foreign = await client.clientCredentialsGrant(strangerConfig, { scope: 'notes:read' });
    for (const [actor_token, actor_token_type] of [
      [randomBytes(32).toString('base64url'), ACCESS_TOKEN],
      [foreign.access_token, ACCESS_TOKEN],
      [`${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(`{"iss":"${coder.clientId}"}`).toString('base64url')}.`, JWT_TYPE],
      [subject.access_token, ACCESS_TOKEN],
    ]) {
      const r = await exchange(coderConfig, { ...base, actor_token: actor_token!, actor_token_type: actor_token_type! });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_request');
      assert.match(String(r.body.error_description), /actor_token does not prove/);
    }
    // An assertion signed with the Coding Agent's registered key (actor_token_type jwt) proves it, once.
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: coder.kid })
      .setIssuer(coder.clientId)
      .setSubject(coder.clientId)
      .setAudience(server.issuer)
      .setJti(randomBytes(16).toString('hex'))
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(coder.privateKey!);
    const asserted = await exchange(coderConfig, { ...base, actor_token: assertion, actor_token_type: JWT_TYPE });
    assert.equal(asserted.status, 200, JSON.stringify(asserted.body));
    const replayed = await exchange(coderConfig, { ...base, actor_token: assertion, actor_token_type: JWT_TYPE });
    assert.equal(replayed.body.error, 'invalid_request', 'an actor assertion is used once');
    const untyped = await exchange(coderConfig, { ...base, actor_token: own.access_token });
    assert.equal(untyped.status, 400);
    assert.equal(untyped.body.error, 'invalid_request');
  });

  it('refuses wider scopes and other audiences', async () => {
    const base = { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN };
    // notes:write is the subject's but not the Coding Agent's; calendar:read is the agent's but not the subject's.
    for (const scope of ['notes:write', 'calendar:read', 'notes:read notes:write']) {
      const r = await exchange(coderConfig, { ...base, scope });
      assert.equal(r.status, 400, scope);
      assert.equal(r.body.error, 'invalid_scope', scope);
    }
    const targets: Record<string, string>[] = [{ resource: CALENDAR_API }, { audience: SEARCH_API }, { resource: 'https://unknown.example.com/' }];
    for (const target of targets) {
      const r = await exchange(coderConfig, { ...base, ...target });
      assert.equal(r.status, 400, JSON.stringify(target));
      assert.equal(r.body.error, 'invalid_target', JSON.stringify(target));
    }
    const mixed = await exchange(coderConfig, { ...base, resource: NOTES_API, audience: CALENDAR_API });
    assert.equal(mixed.body.error, 'invalid_target');
  });

  it('refuses bad requests: missing or unknown subject tokens, unsupported token types', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ subject_token_type: ACCESS_TOKEN }, 'invalid_request'],
      [{ subject_token: subject.access_token }, 'invalid_request'],
      [{ subject_token: subject.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, 'invalid_request'],
      [{ subject_token: subject.refresh_token!, subject_token_type: ACCESS_TOKEN }, 'invalid_request'],
      [{ subject_token: randomBytes(32).toString('base64url'), subject_token_type: ACCESS_TOKEN }, 'invalid_request'],
      [
        { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN, requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' },
        'invalid_request',
      ],
    ];
    for (const [params, error] of cases) {
      const r = await exchange(coderConfig, params);
      assert.equal(r.status, 400, JSON.stringify(params));
      assert.equal(r.body.error, error, JSON.stringify(params));
    }
  });

  it('nests act along the chain and stops at the depth limit', async () => {
    // Reporting → Coding → Review → Archive → (Overflow refused: three exchanges at most).
    const archive = await exchanger('Archive Agent', 'notes:read');
    const overflow = await exchanger('Overflow Agent', 'notes:read');
    await server.cli(['clients', 'update', reviewer.clientId, '--delegate-to', archive.clientId]);
    await server.cli(['clients', 'update', archive.clientId, '--delegate-to', overflow.clientId]);
    const step1 = await exchange(coderConfig, { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN, scope: 'notes:read' });
    const step2 = await exchange(reviewerConfig, { subject_token: String(step1.body.access_token), subject_token_type: ACCESS_TOKEN });
    assert.equal(step2.status, 200, JSON.stringify(step2.body));
    const archiveConfig = await clientFor(server, archive);
    const step3 = await exchange(archiveConfig, { subject_token: String(step2.body.access_token), subject_token_type: ACCESS_TOKEN });
    assert.equal(step3.status, 200, JSON.stringify(step3.body));
    const info = await client.tokenIntrospection(archiveConfig, String(step3.body.access_token));
    assert.deepEqual(info.act, { sub: archive.clientId, act: { sub: reviewer.clientId, act: { sub: coder.clientId, act: { sub: planner.clientId } } } });
    assert.equal(info.may_act, undefined, 'the chain is full: nobody may be handed it');
    const step4 = await exchange(await clientFor(server, overflow), { subject_token: String(step3.body.access_token), subject_token_type: ACCESS_TOKEN });
    assert.equal(step4.status, 400);
    assert.equal(step4.body.error, 'invalid_request');
    assert.match(String(step4.body.error_description), /at most 3 token exchanges/);
    // Audit rows name the whole chain; exporting for the first agent finds the last link's token.
    const rows = (await auditRows(server, planner.clientId)).filter((e) => e.event_type === 'token.issued' && e.client_id === archive.clientId);
    assert.equal(rows.length, 1);
    assert.deepEqual(rows[0]!.details.chain, [planner.clientId, coder.clientId, reviewer.clientId, archive.clientId]);
    assert.equal(rows[0]!.details.grant_type, TOKEN_EXCHANGE);
    assert.equal(rows[0]!.summary, `${user.username} via Reporting Agent via Coding Agent via Review Agent via Archive Agent: token.issued`);
  });

  it('carries act in JWT access tokens, from a JWT subject token', async () => {
    const { tokens } = await userToken(server, plannerConfig, user, 'calendar:read', CALENDAR_API);
    assert.deepEqual(claimsOf(tokens.access_token).may_act, { sub: coder.clientId });
    for (const type of [ACCESS_TOKEN, JWT_TYPE]) {
      const r = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: type });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const claims = claimsOf(String(r.body.access_token));
      assert.deepEqual(claims.act, { sub: coder.clientId, act: { sub: planner.clientId } });
      assert.equal(claims.aud, CALENDAR_API);
      assert.equal(claims.sub, user.id);
      assert.equal(claims.client_id, coder.clientId);
      assert.ok(Number(claims.exp) <= Number(claimsOf(tokens.access_token).exp));
    }
    // A JWT the server did not sign is no subject token.
    const [h, p] = tokens.access_token.split('.');
    const forged = await exchange(coderConfig, { subject_token: `${h}.${p}.${randomBytes(64).toString('base64url')}`, subject_token_type: JWT_TYPE });
    assert.equal(forged.body.error, 'invalid_request');
  });

  it('lets an MCP server exchange its token for a downstream API, capped to what its token has left', async () => {
    const { tokens } = await userToken(server, plannerConfig, user, 'search:query', MCP_SERVER);
    // A delegate of nobody, but the introspecting client of the subject token's audience.
    const r = await exchange(mcpConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN, resource: SEARCH_API });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(Number(r.body.expires_in) <= 60, `expires_in ${r.body.expires_in} is capped by the subject token's 60 s, not the API's 3600 s`);
    const info = await client.tokenIntrospection(searchRs, String(r.body.access_token));
    assert.equal(info.active, true);
    assert.equal(info.aud, SEARCH_API);
    assert.deepEqual(info.act, { sub: mcpRs.clientId, act: { sub: planner.clientId } });
    // The downstream API's helper exposes the chain: the user, via the Reporting Agent, via the MCP server.
    const search = createResourceServer({
      issuer: server.issuer,
      resource: SEARCH_API,
      introspection: { clientId: searchClient.clientId, privateKey: searchClient.privateKey!, kid: searchClient.kid },
    });
    const verified = await search.verify(String(r.body.access_token), ['search:query']);
    assert.equal(verified.subject, user.id);
    assert.equal(verified.clientId, mcpRs.clientId);
    assert.deepEqual(verified.delegationChain, [planner.clientId, mcpRs.clientId]);
    const same = await exchange(mcpConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN, resource: MCP_SERVER });
    assert.equal(same.body.error, 'invalid_target');
    const none = await exchange(mcpConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(none.body.error, 'invalid_target');
    // Another resource server's token is not its to exchange.
    const notes = await exchange(mcpConfig, { subject_token: subject.access_token, subject_token_type: ACCESS_TOKEN, resource: SEARCH_API });
    assert.equal(notes.body.error, 'invalid_request');
  });

  it('lists delegates under the agent on /account, and revokes one delegate alone', async () => {
    const fresh = await createUser(server);
    const { tokens } = await userToken(server, plannerConfig, fresh, 'notes:read notes:write', NOTES_API);
    const handed = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN, scope: 'notes:read' });
    assert.equal(handed.status, 200);
    const { html, jar } = await signInToAccount(server, fresh);
    assert.match(html, /It handed parts of this to/);
    const delegate = /<h4>Coding Agent<\/h4>[\s\S]*?href="\/account\/agents\/([^"/]+)\/revoke">Revoke only this agent/.exec(html);
    assert.ok(delegate, 'the Coding Agent is listed under the Reporting Agent');
    assert.match(html.slice(delegate.index), /Read your notes/);
    const confirm = await (await browse(jar, `${server.issuer}/account/agents/${delegate[1]}/revoke`)).text();
    await followOnIssuer(jar, server.issuer, await postForm(jar, `${server.issuer}/account/agents/${delegate[1]}/revoke`, { csrf: csrfOf(confirm) }));
    assert.deepEqual(await client.tokenIntrospection(coderConfig, String(handed.body.access_token)), { active: false });
    assert.equal((await client.tokenIntrospection(plannerConfig, tokens.access_token)).active, true, "the first agent's own token lives on");
    const again = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN, scope: 'notes:read' });
    assert.equal(again.body.error, 'invalid_request');
    assert.match(String(again.body.error_description), /revoked/);
  });

  it("revoking the user's grant kills every token exchanged from it at once", async () => {
    const fresh = await createUser(server);
    const { tokens } = await userToken(server, plannerConfig, fresh, 'notes:read', NOTES_API);
    const step1 = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN });
    const step2 = await exchange(reviewerConfig, { subject_token: String(step1.body.access_token), subject_token_type: ACCESS_TOKEN });
    assert.equal(step2.status, 200, JSON.stringify(step2.body));
    const grantId = String((await client.tokenIntrospection(plannerConfig, tokens.access_token)).grant_id);
    const revoked = await server.cli(['grants', 'revoke', grantId, '--json']);
    assert.equal(revoked.code, 0, revoked.stderr);
    for (const [config, token] of [
      [plannerConfig, tokens.access_token],
      [coderConfig, String(step1.body.access_token)],
      [reviewerConfig, String(step2.body.access_token)],
    ] as const) {
      assert.deepEqual(await client.tokenIntrospection(config, token), { active: false });
    }
    const again = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(again.body.error, 'invalid_request');
    const row = (await auditRows(server, planner.clientId)).find((e) => e.event_type === 'grant.revoked' && e.grant_id === grantId);
    assert.equal((row?.details.delegations as string[] | undefined)?.length, 2, 'the revocation names both delegations');
  });
  it("exchanges a DPoP-bound subject token, and binds the new token to the actor's own proof (RFC 9449)", async () => {
    const keyPair = () => crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']) as Promise<client.CryptoKeyPair>;
    const fresh = await createUser(server);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(plannerConfig, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'notes:read',
      resource: NOTES_API,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback } = await authorize(server.issuer, url, fresh);
    const plannerKey = client.getDPoPHandle(plannerConfig, await keyPair());
    const bound = await client.authorizationCodeGrant(plannerConfig, callback, { pkceCodeVerifier: verifier }, { resource: NOTES_API }, { DPoP: plannerKey });
    assert.equal(bound.token_type.toLowerCase(), 'dpop');
    const subjectJkt = ((await client.tokenIntrospection(plannerConfig, bound.access_token)).cnf as { jkt: string }).jkt;
    // The Coding Agent cannot prove the Reporting Agent's key, and need not: its own proof binds what it gets.
    const coderKey = client.getDPoPHandle(coderConfig, await keyPair());
    const r = await client.genericGrantRequest(
      coderConfig,
      TOKEN_EXCHANGE,
      { subject_token: bound.access_token, subject_token_type: ACCESS_TOKEN },
      { DPoP: coderKey },
    );
    assert.equal(r.token_type.toLowerCase(), 'dpop');
    const info = await client.tokenIntrospection(coderConfig, r.access_token);
    assert.equal(info.active, true);
    const jkt = (info.cnf as { jkt: string }).jkt;
    assert.ok(jkt && jkt !== subjectJkt, "bound to the Coding Agent's key, not the subject token's");
    assert.deepEqual(info.act, { sub: coder.clientId, act: { sub: planner.clientId } });
    // The next link exchanges the bound token in turn; without a proof of its own it gets a Bearer token.
    const next = await exchange(reviewerConfig, { subject_token: r.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.equal(String(next.body.token_type).toLowerCase(), 'bearer');
  });

  it('refuses a delegate at once when the operator takes it off the list, whatever the token says', async () => {
    const fresh = await createUser(server);
    const { tokens } = await userToken(server, plannerConfig, fresh, 'notes:read', NOTES_API);
    assert.deepEqual((await client.tokenIntrospection(plannerConfig, tokens.access_token)).may_act, { sub: coder.clientId });
    const cleared = await server.cli(['clients', 'update', planner.clientId, '--delegate-to', 'none', '--json']);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.deepEqual(JSON.parse(cleared.stdout).delegates, []);
    // The token still names the Coding Agent in may_act; the policy, not the token, decides (Keycloak #50690).
    const r = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
    assert.match(String(r.body.error_description), /not allowed to act/);
    const later = await userToken(server, plannerConfig, fresh, 'notes:read', NOTES_API);
    assert.equal((await client.tokenIntrospection(plannerConfig, later.tokens.access_token)).may_act, undefined);
    assert.equal((await server.cli(['clients', 'update', planner.clientId, '--delegate-to', coder.clientId])).code, 0);
  });
});

describe('revocation events along a delegation chain', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  const received: Record<string, unknown>[] = [];
  let close: () => Promise<void>;

  before(async () => {
    server = await startServer(testHostEnv());
    const host = await createTestHost('chain-events', (req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => {
        body += d;
      });
      req.on('end', () => {
        received.push(claimsOf(body));
        res.writeHead(202).end();
      });
    });
    close = () => host.close();
    await createScope(server, 'notes:read', 'Read your notes');
    const events = `${host.origin}/events`;
    const made = await server.cli(['resources', 'create', NOTES_API, '--scopes', 'notes:read', '--event-uri', events]);
    assert.equal(made.code, 0, made.stderr);
  });
  after(async () => {
    await close?.();
    await server?.stop();
  });

  it('tells every party of the chain, naming it, when the user revokes the first agent', async () => {
    const planner = await createAgent(server, { name: 'Reporting Agent', redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read' });
    const coder = await createAgent(server, { name: 'Coding Agent', grantTypes: [TOKEN_EXCHANGE], scope: 'notes:read' });
    const uri = (await server.cli(['resources', 'show', NOTES_API, '--json'])).stdout;
    const eventUri = String(JSON.parse(uri).event_delivery_uri);
    for (const agent of [planner, coder]) assert.equal((await server.cli(['clients', 'update', agent.clientId, '--event-uri', eventUri])).code, 0);
    assert.equal((await server.cli(['clients', 'update', planner.clientId, '--delegate-to', coder.clientId])).code, 0);
    const user = await createUser(server);
    const { tokens } = await userToken(server, await clientFor(server, planner), user, 'notes:read', NOTES_API);
    const coderConfig = await clientFor(server, coder);
    const handed = await exchange(coderConfig, { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN });
    assert.equal(handed.status, 200, JSON.stringify(handed.body));
    const childGrant = String((await client.tokenIntrospection(coderConfig, String(handed.body.access_token))).grant_id);
    const rootGrant = String((await client.tokenIntrospection(await clientFor(server, planner), tokens.access_token)).grant_id);
    assert.equal((await server.cli(['grants', 'revoke', rootGrant])).code, 0);

    const revokedEvent = (e: Record<string, unknown>) => (e.events as Record<string, Record<string, unknown>>)[GRANT_REVOKED_EVENT]!;
    // The agent and the resource server hear of each grant: 2 for the root, 2 for the delegation.
    await waitFor('four revocation events', () => received.length >= 4 || undefined);
    const forChild = received.filter((e) => revokedEvent(e).grant_id === childGrant);
    assert.deepEqual(forChild.map((e) => e.aud).sort(), [NOTES_API, coder.clientId].sort());
    for (const e of forChild) {
      assert.deepEqual(revokedEvent(e).delegation_chain, [planner.clientId, coder.clientId]);
      assert.equal(revokedEvent(e).reason, 'delegating_grant_revoked');
    }
    const forRoot = received.filter((e) => revokedEvent(e).grant_id === rootGrant);
    assert.deepEqual(forRoot.map((e) => e.aud).sort(), [NOTES_API, planner.clientId].sort());
    assert.equal(revokedEvent(forRoot[0]!).delegation_chain, undefined);
  });
});

describe('token exchange on two instances', {
  skip: REAL_SERVICES ? false : 'needs two server processes on real PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)',
}, () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startCluster(2);
    await createScope(cluster, 'notes:read', 'Read your notes');
  });
  after(() => cluster?.stop());

  it('applies the delegation policy and the revocation cascade on both, and no exchange racing a revocation survives it', async () => {
    const planner = await createAgent(cluster, { name: 'Reporting Agent', redirectUris: ['http://127.0.0.1/cb'], scope: 'notes:read' });
    const coder = await createAgent(cluster, { name: 'Coding Agent', grantTypes: [TOKEN_EXCHANGE], scope: 'notes:read' });
    assert.equal((await cluster.cli(['clients', 'update', planner.clientId, '--delegate-to', coder.clientId])).code, 0);
    const plannerConfig = await clientFor(cluster, planner);
    const coderConfig = await clientFor(cluster, coder);
    const user = await createUser(cluster);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(plannerConfig, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'notes:read',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback } = await authorize(cluster.issuer, url, user);
    const tokens = await client.authorizationCodeGrant(plannerConfig, callback, { pkceCodeVerifier: verifier });
    const params = { subject_token: tokens.access_token, subject_token_type: ACCESS_TOKEN };
    // Consecutive requests alternate between the instances behind the proxy.
    const first = [await exchange(coderConfig, params), await exchange(coderConfig, params)];
    assert.deepEqual(
      first.map((r) => r.status),
      [200, 200],
    );
    // Ten exchanges at once, across both instances, while the user's grant is revoked.
    const grantId = String((await client.tokenIntrospection(plannerConfig, tokens.access_token)).grant_id);
    const [racing] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, () => exchange(coderConfig, params))),
      cluster.cli(['grants', 'revoke', grantId]),
    ]);
    const issued = [...first, ...racing].filter((r) => r.status === 200).map((r) => String(r.body.access_token));
    assert.ok(
      racing.every((r) => r.status === 200 || r.body.error === 'invalid_request'),
      JSON.stringify(racing.map((r) => r.body.error)),
    );
    for (const token of issued) {
      for (let i = 0; i < 2; i++) assert.deepEqual(await client.tokenIntrospection(coderConfig, token), { active: false });
    }
    for (let i = 0; i < 2; i++) assert.equal((await exchange(coderConfig, params)).body.error, 'invalid_request');
  });
});
