/**
 * Properties over generated requests (SECURITY-TESTS Z-01, Z-02), with fast-check at a fixed seed
 * so CI sees the same cases every time:
 * - the redirect URI oracle: the authorization endpoint redirects to a URI if and only if it is
 *   registered, string for string (RFC 9700 §4.1.3; OAuth 2.1 §2.3.1), or, for a native client's
 *   loopback URI, the same string with another port (RFC 8252 §7.3); every mutation of a
 *   registered URI that attackers have used against other servers (case, percent-encoding, dot
 *   segments, userinfo, backslashes, ports, IDN look-alikes, whitespace, query, fragment) gets an
 *   error page and no redirect;
 * - the endpoint grammar: any form body at the token, introspection, revocation, PAR, device and
 *   CIBA endpoints is an RFC 6749 JSON error, never a 5xx, never a token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import * as client from 'openid-client';
import { OAUTH_ERROR_CODE } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const RUNS = { numRuns: 150, seed: 20261201, endOnFailure: true, includeErrorInReport: true };

const WEB_URI = 'https://agent.example/callback';
const LOOPBACK_URI = 'http://127.0.0.1:8765/callback';

/** One change an attacker makes to a registered URI, applied as text. */
const uriMutation: fc.Arbitrary<(uri: string) => string> = fc.oneof(
  fc.nat().map((i) => (u: string) => {
    const at = i % u.length;
    return u.slice(0, at) + u[at]!.toUpperCase() + u.slice(at + 1);
  }),
  fc.nat().map((i) => (u: string) => {
    const at = i % u.length;
    return `${u.slice(0, at)}%${u.charCodeAt(at).toString(16).toUpperCase().padStart(2, '0')}${u.slice(at + 1)}`;
  }),
  fc.constantFrom(
    (u: string) => u.replace('/callback', '/./callback'),
    (u: string) => u.replace('/callback', '/x/../callback'),
    (u: string) => u.replace('/callback', '/%2e/callback'),
    (u: string) => u.replace('://', '://evil.example@'),
    (u: string) => u.replace('/callback', '@evil.example/callback'),
    (u: string) => u.replace(/\/callback$/, '\\callback'),
    (u: string) => u.replace('://', ':\\\\'),
    (u: string) => `${u};x`,
    (u: string) => u.replace(/(\/\/[^/:]+)(:\d+)?/, '$1:443'),
    (u: string) => u.replace(/(\/\/[^/:]+)(:\d+)?/, '$1:99999'),
    (u: string) => u.replace(/(\/\/[^/:]+)(:\d+)?/, '$1:'),
    (u: string) => `${u}/`,
    (u: string) => u.replace('agent', 'аgent'), // Cyrillic a
    (u: string) => u.replace('agent.example', 'xn--agent-9ua.example'),
    (u: string) => ` ${u}`,
    (u: string) => `${u} `,
    (u: string) => `${u}%20`,
    (u: string) => `${u}\t`,
    (u: string) => `${u}?x=1`,
    (u: string) => `${u}?`,
    (u: string) => `${u}#`,
    (u: string) => `${u}#x`,
    (u: string) => u.replace('https:', 'http:'),
    (u: string) => u.replace('http:', 'https:'),
    (u: string) => u.replace('127.0.0.1', 'localhost'),
    (u: string) => u.replace('127.0.0.1', '[::1]'),
    (u: string) => u.replace('127.0.0.1', '127.1'),
    (u: string) => u.replace('127.0.0.1', '127.0.0.2'),
    (u: string) => u.replace('agent.example', 'agent.example.evil.example'),
    (u: string) => u.replace('/callback', '/callbackx'),
    (u: string) => u.replace('/callback', '/Callback'),
  ),
  fc.integer({ min: 0, max: 70000 }).map((port) => (u: string) => u.replace(/(\/\/[^/:]+)(:\d+)?/, `$1:${port}`)),
);
/** A registered URI with up to three changes (none: the registered URI itself). */
const candidateOf = (registered: string) => fc.array(uriMutation, { maxLength: 3 }).map((changes) => changes.reduce((u, change) => change(u), registered));

/** RFC 8252 §7.3 for our one loopback URI: the same string with any valid port, or none. */
const loopbackAllowed = (u: string) => {
  const port = /^http:\/\/127\.0\.0\.1(?::(\d*))?\/callback$/.exec(u);
  return port !== null && (port[1] === undefined || port[1] === '' || Number(port[1]) <= 65535);
};

describe('the authorization endpoint redirects only to a registered URI (SECURITY-TESTS Z-02)', () => {
  let server: TestServer;
  let web: client.Configuration;
  let native: client.Configuration;

  before(async () => {
    server = await startServer();
    await createScope(server, 'notes:read', 'Read your notes');
    const webAgent: TestAgent = await createAgent(server, { redirectUris: [WEB_URI], scope: 'notes:read' });
    const nativeAgent: TestAgent = await createAgent(server, { redirectUris: [LOOPBACK_URI], scope: 'notes:read' });
    web = await clientFor(server, webAgent);
    native = await clientFor(server, nativeAgent);
  });
  after(() => server?.stop());

  /** 'redirect' when the AS goes on to sign the user in (and would redirect), 'refused' for its error page. */
  async function outcome(config: client.Configuration, redirectUri: string): Promise<'redirect' | 'refused'> {
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'notes:read',
      state: 'st',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const res = await fetch(url, { redirect: 'manual', headers: { accept: 'text/html' } });
    const location = res.headers.get('location');
    await res.arrayBuffer();
    if (res.status === 303 && location?.startsWith('/interaction/')) return 'redirect';
    assert.equal(res.status, 400, `${JSON.stringify(redirectUri)}: ${res.status} ${location}`);
    assert.equal(location, null, `${JSON.stringify(redirectUri)}: no redirect with an error`);
    return 'refused';
  }

  it('a web client: exactly its registered string', async () => {
    const seen = { redirect: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(candidateOf(WEB_URI), async (candidate) => {
        const answer = await outcome(web, candidate);
        seen[answer]++;
        assert.equal(answer, candidate === WEB_URI ? 'redirect' : 'refused', JSON.stringify(candidate));
      }),
      RUNS,
    );
    // Not vacuous: the generator reached both answers.
    assert.ok(seen.redirect > 0 && seen.refused > 0, JSON.stringify(seen));
  });

  it('a native client: its loopback string with any port (RFC 8252 §7.3), and nothing else', async () => {
    let otherPorts = 0;
    await fc.assert(
      fc.asyncProperty(candidateOf(LOOPBACK_URI), async (candidate) => {
        const answer = await outcome(native, candidate);
        if (answer === 'redirect' && candidate !== LOOPBACK_URI) otherPorts++;
        assert.equal(answer, loopbackAllowed(candidate) ? 'redirect' : 'refused', JSON.stringify(candidate));
      }),
      RUNS,
    );
    assert.ok(otherPorts > 0, 'the generator reached other ports');
  });
});

/** Parameter names the endpoints know, and some they do not. */
const parameterName = fc.oneof(
  fc.constantFrom(
    'grant_type',
    'code',
    'refresh_token',
    'code_verifier',
    'redirect_uri',
    'client_id',
    'client_secret',
    'client_assertion',
    'client_assertion_type',
    'scope',
    'resource',
    'audience',
    'token',
    'token_type_hint',
    'subject_token',
    'subject_token_type',
    'actor_token',
    'requested_token_type',
    'device_code',
    'auth_req_id',
    'login_hint',
    'binding_message',
    'authorization_details',
    'response_type',
    'code_challenge',
    'request',
    'request_uri',
  ),
  fc.string({ minLength: 1, maxLength: 12 }),
);
const parameterValue = fc.oneof(
  fc.constantFrom(
    '',
    'authorization_code',
    'refresh_token',
    'client_credentials',
    'urn:ietf:params:oauth:grant-type:token-exchange',
    'urn:ietf:params:oauth:grant-type:device_code',
    'urn:openid:params:grant-type:ciba',
    'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    'eyJhbGciOiJub25lIn0.e30.',
    '[{"type":"payment"}]',
    '{"__proto__":{"x":1}}',
    'a\u0000b',
    '\uFFFD\uD800',
    'https://evil.example/',
  ),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.nat({ max: 6000 }).map((n) => 'x'.repeat(n)),
);
const formBody = fc.array(fc.tuple(parameterName, parameterValue), { maxLength: 8 });
const contentType = fc.constantFrom(
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=utf-8',
  'application/x-www-form-urlencoded; charset=latin1',
  'application/json',
  'text/plain',
  'multipart/form-data; boundary=x',
  undefined,
);

describe('every endpoint that takes a form answers garbage with an RFC 6749 error (SECURITY-TESTS Z-01)', () => {
  let server: TestServer;
  let endpoints: string[];

  before(async () => {
    server = await startServer();
    const metadata = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    endpoints = [
      'token_endpoint',
      'introspection_endpoint',
      'revocation_endpoint',
      'pushed_authorization_request_endpoint',
      'device_authorization_endpoint',
      'backchannel_authentication_endpoint',
    ].map((name) => {
      assert.equal(typeof metadata[name], 'string', `${name} in the metadata`);
      return metadata[name] as string;
    });
  });
  after(() => server?.stop());

  it('never a 5xx, never a token, always JSON with an error code, never cached', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.nat(), formBody, contentType, fc.boolean(), async (which, pairs, type, asJson) => {
        const endpoint = endpoints[which % endpoints.length]!;
        const body = asJson ? JSON.stringify(Object.fromEntries(pairs)) : new URLSearchParams(pairs).toString();
        const res = await fetch(endpoint, { method: 'POST', headers: type ? { 'content-type': type } : {}, body });
        const text = await res.text();
        const what = `${endpoint} ${type} ${body.slice(0, 300)}: ${res.status} ${text.slice(0, 300)}`;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        assert.ok([400, 401, 413, 415].includes(res.status), what);
        const answer = JSON.parse(text) as Record<string, unknown>;
        assert.match(String(answer.error), OAUTH_ERROR_CODE, what);
        assert.equal(answer.access_token, undefined, what);
        assert.doesNotMatch(text, /at [\w.<>]+ \(|node_modules|\.ts:\d+/, `no stack trace: ${what}`);
        assert.match(res.headers.get('cache-control') ?? '', /no-store/, what);
      }),
      RUNS,
    );
    // Not vacuous: some bodies got past the parsers to client authentication.
    assert.ok((statuses.get(401) ?? 0) > 0 && (statuses.get(400) ?? 0) > 0, JSON.stringify([...statuses]));
  });
});
