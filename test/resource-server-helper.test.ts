/**
 * The `agentauth/resource-server` helper, imported as a user would (the package's built JavaScript),
 * protecting a real node:http API: JWTs verified locally, opaque tokens introspected and cached,
 * audience and scope checked, RFC 6750 answers, RFC 9728 metadata, and a pushed revocation event
 * emptying the cache at once. DPoP (RFC 9449 §7, issue 17): bound tokens with their proofs through
 * openid-client and oauth4webapi; a stolen bound token refused without its key, with another key,
 * with a replayed proof, or with a proof for another URL or method; nonce challenges.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createResourceServer, type ResourceServer } from '../src/resource-server/index.ts';
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestAgent, type TestUser } from './helpers/factories.ts';
import { dpopProof, generateTestKey, signJwt } from './helpers/jwt.ts';
import { createTestHost, testHostEnv, testHostsUnavailable, type TestHost } from './helpers/test-host.ts';
import { startServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';

describe('the resource-server helper', { skip: testHostsUnavailable }, () => {
  let server: TestServer;
  let api: http.Server;
  let base: string;
  let events: TestHost;
  let notes: ResourceServer;
  let calendar: ResourceServer;
  let notesApi: string;
  let calendarApi: string;
  let strict: ResourceServer;
  let strictApi: string;
  let user: TestUser;
  const revoked: string[] = [];

  before(async () => {
    server = await startServer(testHostEnv());
    for (const [name, text] of [
      ['notes:read', 'Read your notes'],
      ['notes:write', 'Change your notes'],
      ['calendar:read', 'See your calendar'],
    ])
      await createScope(server, name!, text!);
    user = await createUser(server);

    // One node:http API with two protected resources, each with its own helper.
    const routes: Record<string, { rs: () => ResourceServer; scopes: string[] }> = {
      '/notes/list': { rs: () => notes, scopes: ['notes:read'] },
      '/notes/write': { rs: () => notes, scopes: ['notes:write'] },
      '/calendar/today': { rs: () => calendar, scopes: ['calendar:read'] },
      '/strict/list': { rs: () => strict, scopes: ['notes:read'] },
    };
    const handler: http.RequestListener = async (req, res) => {
      for (const rs of [notes, calendar, strict]) if (await rs.handle(req, res)) return;
      const route = routes[URL.parse(req.url!, 'http://x')?.pathname ?? ''];
      if (!route) return void res.writeHead(404).end();
      const token = await route.rs().authenticate(req, res, { scopes: route.scopes });
      if (!token) return;
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ sub: token.subject ?? null, client_id: token.clientId, scopes: token.scopes }));
    };
    api = http.createServer(handler);
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    // agentauth pushes revocation events as in production: by host name, over https.
    events = await createTestHost('api-events', handler);
    base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    notesApi = `${base}/notes`;
    calendarApi = `${base}/calendar`;
    strictApi = `${base}/strict`;

    const notesIntrospector = await createAgent(server, { name: 'Notes API', grantTypes: ['client_credentials'] });
    for (const args of [
      [
        'resources',
        'create',
        notesApi,
        '--scopes',
        'notes:read notes:write',
        '--client',
        notesIntrospector.clientId,
        '--event-uri',
        `${events.origin}/notes/events`,
      ],
      ['resources', 'create', calendarApi, '--scopes', 'calendar:read', '--token-format', 'jwt', '--event-uri', `${events.origin}/calendar/events`],
      ['resources', 'create', strictApi, '--scopes', 'notes:read', '--token-format', 'jwt'],
    ]) {
      const made = await server.cli(args);
      assert.equal(made.code, 0, made.stderr);
    }
    const onRevocation = (event: { grantId: string }) => void revoked.push(event.grantId);
    notes = createResourceServer({
      issuer: server.issuer,
      resource: notesApi,
      scopesSupported: ['notes:read', 'notes:write'],
      resourceName: 'Notes',
      eventsPath: '/notes/events',
      onRevocation,
      introspection: { clientId: notesIntrospector.clientId, privateKey: notesIntrospector.privateKey!, kid: notesIntrospector.kid },
    });
    calendar = createResourceServer({
      issuer: server.issuer,
      resource: calendarApi,
      scopesSupported: ['calendar:read'],
      eventsPath: '/calendar/events',
      onRevocation,
    });
    // An API that takes DPoP-bound tokens only, each proof with a nonce it issued.
    strict = createResourceServer({ issuer: server.issuer, resource: strictApi, dpop: { required: true, nonces: true } });
  });
  after(async () => {
    await events?.close();
    api?.closeAllConnections();
    await new Promise((resolve) => api?.close(resolve));
    await server?.stop();
  });

  const call = (path: string, token?: string) => fetch(`${base}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});

  async function machineToken(resource: string | undefined, scope: string): Promise<{ agent: TestAgent; token: string }> {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope });
    const tokens = await client.clientCredentialsGrant(await clientFor(server, agent), { scope, ...(resource ? { resource } : {}) });
    return { agent, token: tokens.access_token };
  }

  /** A user's grant to a new agent for one resource; returns the agent's client config and tokens. */
  async function userGrant(resource: string, scope: string) {
    const agent = await createAgent(server, { redirectUris: [REDIRECT_URI], scope });
    const config = await clientFor(server, agent);
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope, redirectUri: REDIRECT_URI, extra: { resource } });
    return { config, tokens };
  }

  /**
   * Kills the grant the way a replay does: reusing a refresh token two rotations old (the
   * immediate predecessor would be a retry, answered with the same successor).
   */
  async function revokeByReuse(config: client.Configuration, refreshToken: string, resource: string): Promise<void> {
    const second = await client.refreshTokenGrant(config, refreshToken, { resource });
    await client.refreshTokenGrant(config, second.refresh_token!, { resource });
    await assert.rejects(client.refreshTokenGrant(config, refreshToken, { resource }));
  }

  it('serves RFC 9728 protected resource metadata at the well-known path for its identifier', async () => {
    const res = await fetch(`${base}/.well-known/oauth-protected-resource/notes`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      resource: notesApi,
      authorization_servers: [server.issuer],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA', 'Ed25519', 'PS256'],
      scopes_supported: ['notes:read', 'notes:write'],
      resource_name: 'Notes',
    });
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/notes`, { method: 'POST' })).status, 405);
  });

  it('survives a request-target it cannot parse (the API keeps serving)', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(base).port), '127.0.0.1', () => socket.write('GET http://[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      let data = '';
      socket.on('data', (d) => {
        data += d;
      });
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 404/);
    assert.equal((await fetch(`${base}/.well-known/oauth-protected-resource/notes`)).status, 200);
  });

  it('answers a request without a token 401 with a challenge pointing at the metadata, and no error code', async () => {
    const res = await call('/notes/list');
    assert.equal(res.status, 401);
    const challenge = res.headers.get('www-authenticate')!;
    assert.match(challenge, /^Bearer /);
    assert.match(challenge, new RegExp(`resource_metadata="${base}/.well-known/oauth-protected-resource/notes"`));
    assert.match(challenge, /scope="notes:read"/);
    assert.doesNotMatch(challenge, /error=/);
    const basic = await fetch(`${base}/notes/list`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assert.equal(basic.status, 401);
  });

  it('answers malformed and unknown tokens with invalid_request (400) and invalid_token (401)', async () => {
    const malformed = await fetch(`${base}/notes/list`, { headers: { authorization: 'Bearer a b c' } });
    assert.equal(malformed.status, 400);
    assert.equal(((await malformed.json()) as { error: string }).error, 'invalid_request');
    for (const token of ['unknown-opaque-token', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.x']) {
      const res = await call('/notes/list', token);
      assert.equal(res.status, 401, token);
      assert.match(res.headers.get('www-authenticate')!, /error="invalid_token"/);
      assert.equal(((await res.json()) as { error: string }).error, 'invalid_token');
    }
  });

  it('introspects an opaque token once and serves it from its cache afterwards', async () => {
    const { agent, token } = await machineToken(notesApi, 'notes:read');
    const before = notes.cacheSize();
    const res = await call('/notes/list', token);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { sub: null, client_id: agent.clientId, scopes: ['notes:read'] });
    assert.equal(notes.cacheSize(), before + 1);
    assert.equal((await call('/notes/list', token)).status, 200);
    assert.equal(notes.cacheSize(), before + 1);
  });

  it('verifies a JWT access token locally, and refuses a tampered one', async () => {
    const { agent, token } = await machineToken(calendarApi, 'calendar:read');
    const res = await call('/calendar/today', token);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { client_id: string }).client_id, agent.clientId);
    const [h, , s] = token.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ iss: server.issuer, aud: calendarApi, client_id: agent.clientId, scope: 'calendar:read', exp: 9999999999, iat: 1 })).toString('base64url')}.${s}`;
    assert.equal((await call('/calendar/today', forged)).status, 401);
    const stranger = generateTestKey('ES256');
    const selfSigned = signJwt(
      { alg: 'ES256', typ: 'at+jwt', kid: 'x' },
      { iss: server.issuer, aud: calendarApi, client_id: 'x', scope: 'calendar:read', exp: 9999999999, iat: 1 },
      stranger.privateKey,
    );
    assert.equal((await call('/calendar/today', selfSigned)).status, 401);
  });

  it('refuses a token meant for another audience, or for none', async () => {
    const calendarJwt = (await machineToken(calendarApi, 'calendar:read notes:read')).token;
    const notesOpaque = (await machineToken(notesApi, 'notes:read')).token;
    const unbound = (await machineToken(undefined, 'notes:read')).token;
    for (const [path, token] of [
      ['/notes/list', calendarJwt],
      ['/calendar/today', notesOpaque],
    ] as const) {
      const res = await call(path, token);
      assert.equal(res.status, 401, path);
      assert.match(res.headers.get('www-authenticate')!, /error="invalid_token"/);
    }
    assert.equal((await call('/notes/list', unbound)).status, 401, 'a token without an audience');
  });

  it('answers 403 insufficient_scope naming the scope the request needs', async () => {
    const { token } = await machineToken(notesApi, 'notes:read');
    const res = await call('/notes/write', token);
    assert.equal(res.status, 403);
    const challenge = res.headers.get('www-authenticate')!;
    assert.match(challenge, /error="insufficient_scope"/);
    assert.match(challenge, /scope="notes:write"/);
  });

  it("sees nothing through a client that is not the token's resource server", async () => {
    const stranger = await createAgent(server, { grantTypes: ['client_credentials'] });
    const impostor = createResourceServer({
      issuer: server.issuer,
      resource: notesApi,
      introspection: { clientId: stranger.clientId, privateKey: stranger.privateKey!, kid: stranger.kid },
    });
    const { token } = await machineToken(notesApi, 'notes:read');
    await assert.rejects(impostor.verify(token), (err: Error & { code?: string }) => err.code === 'invalid_token');
  });

  it("drops a revoked grant's cached opaque token and refuses its unexpired JWT as soon as the event arrives", async () => {
    const opaque = await userGrant(notesApi, 'notes:read');
    const jwt = await userGrant(calendarApi, 'calendar:read');
    assert.equal((await call('/notes/list', opaque.tokens.access_token)).status, 200, 'introspected and cached');
    assert.equal((await call('/calendar/today', jwt.tokens.access_token)).status, 200);
    const grantOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { grant_id: string }).grant_id;
    const jwtGrant = grantOf(jwt.tokens.access_token);
    assert.ok(jwtGrant, 'JWT access tokens name their grant');

    const cachedBefore = notes.cacheSize();
    await revokeByReuse(opaque.config, opaque.tokens.refresh_token!, notesApi);
    await revokeByReuse(jwt.config, jwt.tokens.refresh_token!, calendarApi);
    await waitFor('both revocation events', () => (revoked.includes(jwtGrant) && revoked.length >= 2 ? true : undefined));
    assert.ok(notes.cacheSize() < cachedBefore, 'the cached answer was dropped');
    assert.equal((await call('/notes/list', opaque.tokens.access_token)).status, 401);
    const res = await call('/calendar/today', jwt.tokens.access_token);
    assert.equal(res.status, 401, 'the JWT has not expired, yet it is refused');
    assert.match(res.headers.get('www-authenticate')!, /revoked/);
  });

  it('answers 503, not 401, while agentauth cannot be reached: the token may be good', async () => {
    const orphan = createResourceServer({
      issuer: 'http://127.0.0.1:9',
      resource: notesApi,
      introspection: { clientId: 'x', privateKey: generateTestKey('ES256').privateKey },
    });
    const lone = http.createServer(async (req, res) => void (await orphan.authenticate(req, res)));
    await new Promise<void>((resolve) => lone.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(lone.address() as AddressInfo).port}/`;
      for (const token of ['opaque-token', (await machineToken(calendarApi, 'calendar:read')).token]) {
        const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(res.status, 503);
        assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable');
        assert.ok(res.headers.get('retry-after'));
      }
    } finally {
      lone.close();
    }
  });

  it("refuses events that are not agentauth's, for someone else, or not SETs", async () => {
    const post = (body: string, type = 'application/secevent+jwt') =>
      fetch(`${base}/notes/events`, { method: 'POST', headers: { 'content-type': type }, body });
    const forged = signJwt(
      { alg: 'ES256', typ: 'secevent+jwt', kid: 'x' },
      {
        iss: server.issuer,
        aud: notesApi,
        jti: 'forged',
        iat: 1,
        events: { 'https://agentauth.dev/secevent/grant-revoked': { grant_id: 'g', client_id: 'c', sub: 's' } },
      },
      generateTestKey('ES256').privateKey,
    );
    const res = await post(forged);
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { err: string }).err, /^(invalid_key|authentication_failed)$/);
    assert.equal((await post('not a jwt')).status, 400);
    assert.equal((await post(forged, 'application/json')).status, 400);
    assert.equal((await fetch(`${base}/notes/events`)).status, 405);
  });
  const dpopKeyPair = () => crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']) as Promise<client.CryptoKeyPair>;

  /** A client_credentials token bound to a new key, through openid-client's DPoP handle. */
  async function boundMachineToken(resource: string, scope: string) {
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope });
    const config = await clientFor(server, agent);
    const DPoP = client.getDPoPHandle(config, await dpopKeyPair());
    const tokens = await client.clientCredentialsGrant(config, { scope, resource }, { DPoP });
    assert.equal(tokens.token_type, 'dpop');
    return { config, DPoP, token: tokens.access_token };
  }

  const withProof = (path: string, token: string, proof?: string, method = 'GET') =>
    fetch(`${base}${path}`, { method, headers: { authorization: `DPoP ${token}`, ...(proof ? { dpop: proof } : {}) } });

  async function refusal(res: Response): Promise<{ status: number; error: string; challenge: string }> {
    return { status: res.status, error: ((await res.json()) as { error: string }).error, challenge: res.headers.get('www-authenticate') ?? '' };
  }

  it('serves DPoP-bound tokens, JWT and opaque, with their proofs (openid-client)', async () => {
    for (const [resource, path, scope] of [
      [calendarApi, '/calendar/today', 'calendar:read'],
      [notesApi, '/notes/list', 'notes:read'],
    ] as const) {
      const { config, DPoP, token } = await boundMachineToken(resource, scope);
      const res = await client.fetchProtectedResource(config, token, new URL(`${base}${path}`), 'GET', undefined, undefined, { DPoP });
      assert.equal(res.status, 200, path);
      // Two requests, two proofs: each is fresh, so both pass.
      const again = await client.fetchProtectedResource(config, token, new URL(`${base}${path}`), 'GET', undefined, undefined, { DPoP });
      assert.equal(again.status, 200, path);
    }
  });

  it('refuses a stolen DPoP-bound token without its key, with another key, a replayed proof, or a proof for another URL or method', async () => {
    const { config, DPoP, token } = await boundMachineToken(calendarApi, 'calendar:read');
    const url = `${base}/calendar/today`;
    // The thief has the token, and a key of its own.
    const thief = generateTestKey('ES256');

    const asBearer = await refusal(await call('/calendar/today', token));
    assert.equal(asBearer.status, 401);
    assert.equal(asBearer.error, 'invalid_token');
    assert.match(asBearer.challenge, /^DPoP error="invalid_token"/);
    assert.match(asBearer.challenge, /algs="ES256 EdDSA Ed25519 PS256"/);

    const cases: [string, string | undefined, string?][] = [
      ['no proof', undefined],
      ['another key', dpopProof(thief, 'GET', url, { accessToken: token })],
      ['another URL', dpopProof(thief, 'GET', `${base}/notes/list`, { accessToken: token })],
      ['another method', dpopProof(thief, 'POST', url, { accessToken: token })],
      ['no ath', dpopProof(thief, 'GET', url)],
      ['an old iat', dpopProof(thief, 'GET', url, { accessToken: token, claims: { iat: Math.floor(Date.now() / 1000) - 3600 } })],
      ['RS256', dpopProof(generateTestKey('RS256'), 'GET', url, { accessToken: token })],
      ['a private key in the header', dpopProof(thief, 'GET', url, { accessToken: token, header: { jwk: thief.privateKey.export({ format: 'jwk' }) } })],
    ];
    for (const [what, proof] of cases) {
      const refused = await refusal(await withProof('/calendar/today', token, proof));
      assert.equal(refused.status, 401, what);
      assert.equal(refused.error, 'invalid_dpop_proof', what);
      assert.match(refused.challenge, /^DPoP error="invalid_dpop_proof"/, what);
    }
    // A proof made by the agent for this request, seen in transit and sent again.
    const seen: string[] = [];
    const res = await client.fetchProtectedResource(config, token, new URL(url), 'GET', undefined, undefined, {
      DPoP,
      [client.customFetch]: (input: string, init: RequestInit) => {
        seen.push(new Headers(init.headers).get('dpop')!);
        return fetch(input, init);
      },
    } as client.DPoPOptions);
    assert.equal(res.status, 200);
    const replayed = await refusal(await withProof('/calendar/today', token, seen[0]));
    assert.equal(replayed.error, 'invalid_dpop_proof');
    assert.equal((await withProof('/calendar/today', token, `${seen[0]}, ${seen[0]}`)).status, 401, 'two DPoP headers');
  });

  it('answers insufficient_scope in the DPoP scheme, and refuses an unbound token sent as DPoP', async () => {
    const { config, DPoP, token } = await boundMachineToken(notesApi, 'notes:read');
    await assert.rejects(
      client.fetchProtectedResource(config, token, new URL(`${base}/notes/write`), 'GET', undefined, undefined, { DPoP }),
      (err: client.WWWAuthenticateChallengeError) =>
        err.status === 403 && err.cause[0]?.scheme === 'dpop' && err.cause[0].parameters.error === 'insufficient_scope',
    );
    const unbound = (await machineToken(notesApi, 'notes:read')).token;
    const key = generateTestKey('ES256');
    const refused = await refusal(await withProof('/notes/list', unbound, dpopProof(key, 'GET', `${base}/notes/list`, { accessToken: unbound })));
    assert.equal(refused.error, 'invalid_token');
  });

  it('an API that requires DPoP says so, refuses Bearer, and challenges for its nonce (oauth4webapi)', async () => {
    const metadata = (await (await fetch(`${base}/.well-known/oauth-protected-resource/strict`)).json()) as Record<string, unknown>;
    assert.equal(metadata.dpop_bound_access_tokens_required, true);
    const none = await fetch(`${base}/strict/list`);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate')!, /^DPoP /);
    const bearer = await refusal(await call('/strict/list', (await machineToken(strictApi, 'notes:read')).token));
    assert.equal(bearer.error, 'invalid_token');
    assert.match(bearer.challenge, /^DPoP /);

    // oauth4webapi end to end: client credentials with DPoP, then the API's nonce challenge.
    const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read' });
    const insecure = { [oauth.allowInsecureRequests]: true };
    const as = await oauth.processDiscoveryResponse(
      new URL(server.issuer),
      await oauth.discoveryRequest(new URL(server.issuer), { ...insecure, algorithm: 'oauth2' }),
    );
    const oauthClient: oauth.Client = { client_id: agent.clientId };
    const auth = oauth.PrivateKeyJwt(agent.privateKey!, {
      [oauth.modifyAssertion]: (header) => {
        header.kid = agent.kid;
      },
    });
    const DPoP = oauth.DPoP(oauthClient, await dpopKeyPair());
    const tokens = await oauth.processClientCredentialsResponse(
      as,
      oauthClient,
      await oauth.clientCredentialsGrantRequest(as, oauthClient, auth, { scope: 'notes:read', resource: strictApi }, { ...insecure, DPoP }),
    );
    assert.equal(tokens.token_type, 'dpop');
    const url = new URL(`${base}/strict/list`);
    await assert.rejects(oauth.protectedResourceRequest(tokens.access_token, 'GET', url, undefined, undefined, { ...insecure, DPoP }), (err: unknown) =>
      oauth.isDPoPNonceError(err),
    );
    const ok = await oauth.protectedResourceRequest(tokens.access_token, 'GET', url, undefined, undefined, { ...insecure, DPoP });
    assert.equal(ok.status, 200);
    assert.ok(ok.headers.get('dpop-nonce'), 'a fresh nonce for the next proof');
    // A nonce the API never issued is challenged again.
    const key = generateTestKey('ES256');
    const forged = await withProof(
      '/strict/list',
      tokens.access_token,
      dpopProof(key, 'GET', url.href, { accessToken: tokens.access_token, nonce: 'made-up' }),
    );
    assert.equal(forged.status, 401);
    assert.match(forged.headers.get('www-authenticate')!, /error="use_dpop_nonce"/);
    assert.ok(forged.headers.get('dpop-nonce'));
  });
});
