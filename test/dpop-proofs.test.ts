/**
 * What a DPoP proof must be (RFC 9449 §4.3) at the token endpoint, case by case: the OpenID
 * FAPI 2 DPoP negative tests (SECURITY-TESTS R-56, F-19) and, as properties over random
 * mutations of proofs and client assertions (Z-04), that a malformed JOSE input is an OAuth error
 * and never a 5xx or a token.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { OAUTH_ERROR_CODE, tokenAnswer, type TokenAnswer } from './helpers/browserless.ts';
import { createAgent, createScope, type TestAgent } from './helpers/factories.ts';
import { clientAssertion, dpopProof, generateTestKey, signJws, signJwt, type TestKey } from './helpers/jwt.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const now = () => Math.floor(Date.now() / 1000);

/** fetch joins repeated headers; two DPoP header fields need a request written by hand. */
function tokenRequestWithTwoProofs(issuer: string, params: Record<string, string>, proofs: [string, string]): Promise<{ status: number; body: string }> {
  const url = new URL(`${issuer}/token`);
  const body = new URLSearchParams(params).toString();
  const request = [
    `POST ${url.pathname} HTTP/1.1`,
    `Host: ${url.host}`,
    'Content-Type: application/x-www-form-urlencoded',
    `Content-Length: ${Buffer.byteLength(body)}`,
    `DPoP: ${proofs[0]}`,
    `DPoP: ${proofs[1]}`,
    'Connection: close',
    '',
    body,
  ].join('\r\n');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(request));
    let raw = '';
    socket.on('data', (d: Buffer) => {
      raw += d;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1]);
      resolve({ status, body: raw.slice(raw.indexOf('\r\n\r\n') + 4) });
    });
  });
}

/** A deployment with one client-credentials agent authenticating with an ES256 key (private_key_jwt). */
async function machineAgentDeployment(): Promise<{ server: TestServer; clientKey: TestKey; agent: TestAgent }> {
  const server = await startServer();
  await createScope(server, 'notes:read', 'Read your notes');
  const clientKey = generateTestKey('ES256');
  const agent = await createAgent(server, { grantTypes: ['client_credentials'], scope: 'notes:read', jwks: { keys: [clientKey.publicJwk] } });
  return { server, clientKey, agent };
}

const b64 = (value: string) => Buffer.from(value).toString('base64url');

/** The public JWK a proof embeds (no kid, alg or use: the proof's header says the algorithm). */
const embedded = (key: TestKey) => {
  const { kid: _kid, alg: _alg, use: _use, ...jwk } = key.publicJwk;
  return jwk;
};

describe('DPoP proofs at the token endpoint (RFC 9449 §4.3; FAPI 2 DPoP negative tests)', () => {
  let server: TestServer;
  let clientKey: TestKey;
  let agent: TestAgent;
  let htu: string;

  before(async () => {
    ({ server, clientKey, agent } = await machineAgentDeployment());
    htu = `${server.issuer}/token`;
  });
  after(() => server?.stop());

  const params = () => ({
    grant_type: 'client_credentials',
    scope: 'notes:read',
    client_assertion_type: JWT_BEARER,
    client_assertion: clientAssertion(clientKey, agent.clientId, server.issuer),
  });

  it('refuses every malformed proof with 400 invalid_dpop_proof, and issues no token', async () => {
    const key = generateTestKey('ES256');
    const other = generateTestKey('ES256');
    const good = () => dpopProof(key, 'POST', htu);
    const [h, p, s] = good().split('.') as [string, string, string];
    const claims = (extra: Record<string, unknown>) => dpopProof(key, 'POST', htu, { claims: extra });
    const header = (extra: Record<string, unknown>) => dpopProof(key, 'POST', htu, { header: extra });
    const { d: _d, ...privateJwk } = key.privateKey.export({ format: 'jwk' });
    const cases: [string, string][] = [
      ['not a JWT', 'not-a-jwt'],
      ['two segments', `${h}.${p}`],
      ['four segments', `${h}.${p}.${s}.${s}`],
      ['a bad signature', `${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`],
      ['a payload that is not JSON', `${h}.${b64('{"htm":')}.${s}`],
      ['no typ', header({ typ: undefined })],
      ['typ JWT', header({ typ: 'JWT' })],
      ['typ at+jwt', header({ typ: 'at+jwt' })],
      ['no alg', `${b64(JSON.stringify({ typ: 'dpop+jwt', jwk: embedded(key) }))}.${p}.${s}`],
      ['alg none', signJwt({ alg: 'none', typ: 'dpop+jwt', jwk: embedded(key) }, JSON.parse(Buffer.from(p, 'base64url').toString()))],
      ['alg HS256', signJwt({ alg: 'HS256', typ: 'dpop+jwt', jwk: embedded(key) }, JSON.parse(Buffer.from(p, 'base64url').toString()), Buffer.alloc(32, 7))],
      ['RS256 (not among the advertised algorithms)', dpopProof(generateTestKey('RS256'), 'POST', htu)],
      ['no jwk', header({ jwk: undefined })],
      ['a jwk that is not an object', header({ jwk: 'key' })],
      ['the private key in the jwk header', header({ jwk: { ...privateJwk, d: key.privateKey.export({ format: 'jwk' }).d } })],
      ['a jwk of another key than the signer’s', header({ jwk: embedded(other) })],
      ['no jti', claims({ jti: undefined })],
      ['a numeric jti', claims({ jti: 12345 })],
      ['no htm', claims({ htm: undefined })],
      ['htm GET', claims({ htm: 'GET' })],
      ['htm post (case matters)', claims({ htm: 'post' })],
      ['no htu', claims({ htu: undefined })],
      ['htu of another endpoint', claims({ htu: `${server.issuer}/token/introspection` })],
      ['htu of another host', claims({ htu: 'https://as.example/token' })],
      ['htu that is not a URL', claims({ htu: 'token' })],
      ['no iat', claims({ iat: undefined })],
      ['iat as a string', claims({ iat: String(now()) })],
      ['a nonce that is not a string', claims({ nonce: 7 })],
    ];
    for (const [what, proof] of cases) {
      const answer = await tokenAnswer(server.issuer, params(), proof);
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, 'invalid_dpop_proof', `${what}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.access_token, undefined, what);
    }
  });

  it('answers a proof whose iat is more than 300 s off either way with use_dpop_nonce and a nonce to use (§8)', async () => {
    const key = generateTestKey('ES256');
    for (const offset of [-3600, 3600, -301, 301]) {
      const answer = await tokenAnswer(server.issuer, params(), dpopProof(key, 'POST', htu, { claims: { iat: now() + offset } }));
      assert.equal(answer.status, 400, `iat ${offset}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, 'use_dpop_nonce', `iat ${offset}`);
      assert.ok(answer.nonce, `iat ${offset}: a DPoP-Nonce header`);
      assert.equal(answer.body.access_token, undefined);
    }
  });

  it('accepts a proof whose iat is 10 s behind or ahead of the server, and an htu with a query or fragment (ignored, §4.3)', async () => {
    const key = generateTestKey('ES256');
    const proofs = [
      dpopProof(key, 'POST', htu, { claims: { iat: now() - 10 } }),
      dpopProof(key, 'POST', htu, { claims: { iat: now() + 10 } }),
      dpopProof(key, 'POST', `${htu}?x=1`),
      dpopProof(key, 'POST', `${htu}#part`),
    ];
    for (const proof of proofs) {
      const answer = await tokenAnswer(server.issuer, params(), proof);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.token_type, 'DPoP');
    }
  });

  it('refuses two DPoP header fields (§4.3: not more than one), even when both are valid', async () => {
    const key = generateTestKey('ES256');
    const answer = await tokenRequestWithTwoProofs(server.issuer, params(), [dpopProof(key, 'POST', htu), dpopProof(key, 'POST', htu)]);
    assert.equal(answer.status, 400, answer.body);
    assert.equal((JSON.parse(answer.body) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('refuses the same proof twice, and exactly one of ten concurrent uses of one proof wins', async () => {
    const key = generateTestKey('ES256');
    const proof = dpopProof(key, 'POST', htu);
    assert.equal((await tokenAnswer(server.issuer, params(), proof)).status, 200);
    assert.equal((await tokenAnswer(server.issuer, params(), proof)).body.error, 'invalid_dpop_proof');
    const fresh = dpopProof(key, 'POST', htu);
    const answers = await Promise.all(Array.from({ length: 10 }, () => tokenAnswer(server.issuer, params(), fresh)));
    assert.deepEqual(answers.map((a) => a.status).sort(), [200, ...Array(9).fill(400)]);
    assert.ok(answers.filter((a) => a.status === 400).every((a) => a.body.error === 'invalid_dpop_proof'));
  });
});

/**
 * One change to a signed JWS: a header field or claim set to any JSON value, a claim written as
 * a number JSON.stringify cannot produce (the JWS re-signed, so only the value can be refused),
 * or a change to its compact encoding after signing.
 */
type Mutation =
  | { kind: 'header'; field: string; value: unknown }
  | { kind: 'claim'; field: string; value: unknown }
  | { kind: 'rawClaim'; field: string; json: string }
  | { kind: 'encoding'; how: Encoding };
type Encoding = 'extra segment' | 'padding' | 'bad character' | 'truncated signature' | 'empty signature' | 'swapped parts' | 'surrounding whitespace';

const jsonValue = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 20 }),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
);
const oddNumber = fc.constantFrom('1e400', '-1e400', '1e-400', '-0', '9007199254740993', '1.5', '[]', '{}');
const encodings: Encoding[] = ['extra segment', 'padding', 'bad character', 'truncated signature', 'empty signature', 'swapped parts'];

function mutatedJws(key: TestKey, header: Record<string, unknown>, payload: Record<string, unknown>, m: Mutation): string {
  if (m.kind === 'header') return signJwt({ ...header, [m.field]: m.value }, payload, key.privateKey);
  if (m.kind === 'claim') return signJwt(header, { ...payload, [m.field]: m.value }, key.privateKey);
  if (m.kind === 'rawClaim') {
    const { [m.field]: _replaced, ...rest } = payload;
    return signJws(header, `${JSON.stringify(rest).slice(0, -1)},"${m.field}":${m.json}}`, key.privateKey);
  }
  const jws = signJwt(header, payload, key.privateKey);
  const [h, p, s] = jws.split('.') as [string, string, string];
  const flipped = (part: string) => `${part.slice(0, 3)}${part[3] === 'A' ? 'B' : 'A'}${part.slice(4)}`;
  switch (m.how) {
    case 'extra segment':
      return `${jws}.${s}`;
    case 'padding':
      return `${h}=.${p}.${s}`;
    case 'bad character':
      return `${h}.${p.slice(0, 3)}*${p.slice(4)}.${flipped(s)}`;
    case 'truncated signature':
      return `${h}.${p}.${s.slice(0, 20)}`;
    case 'empty signature':
      return `${h}.${p}.`;
    case 'swapped parts':
      return `${p}.${h}.${s}`;
    case 'surrounding whitespace':
      return ` ${jws}\t`;
  }
}

/** fast-check runs with a fixed seed: CI sees the same cases every time; a failure names its case. */
const RUNS = { numRuns: 120, seed: 20261201, endOnFailure: true, includeErrorInReport: true };

describe('malformed JOSE at the token endpoint is an OAuth error, never a 5xx or a token (SECURITY-TESTS Z-04)', () => {
  let server: TestServer;
  let clientKey: TestKey;
  let agent: TestAgent;

  before(async () => {
    ({ server, clientKey, agent } = await machineAgentDeployment());
  });
  after(() => server?.stop());

  const params = (assertion = clientAssertion(clientKey, agent.clientId, server.issuer)) => ({
    grant_type: 'client_credentials',
    scope: 'notes:read',
    client_assertion_type: JWT_BEARER,
    client_assertion: assertion,
  });

  /** What every answer is, whatever it says: RFC 6749 §5.2 JSON, not cached, never a server error. */
  const assertWellFormed = (answer: TokenAnswer, what: string) => {
    assert.ok(answer.status === 200 || answer.status === 400 || answer.status === 401, `${what}: ${answer.status} ${JSON.stringify(answer.body)}`);
    assert.match(answer.cacheControl ?? '', /no-store/, what);
    if (answer.status !== 200) assert.match(String(answer.body.error), OAUTH_ERROR_CODE, what);
  };

  // Proof header fields and claims whose change must be refused, and ones the proof may carry
  // freely (RFC 9449 §4.2: the key is the embedded jwk; kid, jku and x5u name no key here).
  const refusedHeader = ['typ', 'alg', 'jwk', 'crit'];
  const ignoredHeader = ['kid', 'jku', 'x5u', 'x5c-not', 'b64'];
  const refusedClaims = ['htm', 'htu', 'iat'];
  const ignoredClaims = ['ath', 'client_id', 'x'];

  it('DPoP proofs: a mutation of typ, alg, jwk, crit, htm, htu, iat, a non-string jti or the encoding is invalid_dpop_proof; kid, jku, x5u or an extra claim change nothing', async () => {
    const proofMutation: fc.Arbitrary<Mutation> = fc.oneof(
      fc.record({ kind: fc.constant('header' as const), field: fc.constantFrom(...refusedHeader, ...ignoredHeader), value: jsonValue }),
      fc.record({ kind: fc.constant('claim' as const), field: fc.constantFrom(...refusedClaims, ...ignoredClaims), value: jsonValue }),
      fc.record({ kind: fc.constant('claim' as const), field: fc.constant('jti'), value: jsonValue.filter((v) => typeof v !== 'string') }),
      fc.record({ kind: fc.constant('rawClaim' as const), field: fc.constantFrom('htm', 'htu', 'iat', 'jti'), json: oddNumber }),
      fc.record({ kind: fc.constant('encoding' as const), how: fc.constantFrom<Encoding>(...encodings, 'surrounding whitespace') }),
    );
    const harmless = (m: Mutation) =>
      (m.kind === 'header' && ignoredHeader.includes(m.field)) ||
      (m.kind === 'claim' && ignoredClaims.includes(m.field)) ||
      (m.kind === 'encoding' && m.how === 'surrounding whitespace'); // HTTP drops a field value's surrounding whitespace
    const htu = `${server.issuer}/token`;
    await fc.assert(
      fc.asyncProperty(proofMutation, async (m) => {
        const key = generateTestKey('ES256');
        const { kid: _k, alg: _a, use: _u, ...jwk } = key.publicJwk;
        const header = { alg: 'ES256', typ: 'dpop+jwt', jwk };
        const payload = { htm: 'POST', htu, jti: randomUUID(), iat: now() };
        const answer = await tokenAnswer(server.issuer, params(), mutatedJws(key, header, payload, m));
        const what = JSON.stringify(m);
        assertWellFormed(answer, what);
        if (harmless(m)) assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body)}`);
        else {
          assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
          // A numeric iat outside the window is answered with a nonce to use instead (§8).
          const nonceAsked = m.kind !== 'encoding' && m.field === 'iat' && answer.nonce !== null;
          assert.equal(answer.body.error, nonceAsked ? 'use_dpop_nonce' : 'invalid_dpop_proof', what);
        }
      }),
      RUNS,
    );
  });

  it('client assertions: a mutation of alg, kid, crit, iss, sub, aud, exp or the encoding is invalid_client; an extra claim changes nothing', async () => {
    const assertionMutation: fc.Arbitrary<Mutation> = fc.oneof(
      fc.record({ kind: fc.constant('header' as const), field: fc.constantFrom('alg', 'kid', 'crit', 'jku', 'x5u'), value: jsonValue }),
      fc.record({ kind: fc.constant('claim' as const), field: fc.constantFrom('iss', 'sub', 'aud', 'x'), value: jsonValue }),
      fc.record({ kind: fc.constant('claim' as const), field: fc.constant('exp'), value: jsonValue.filter((v) => typeof v !== 'number' || v < now()) }),
      fc.record({ kind: fc.constant('rawClaim' as const), field: fc.constantFrom('iss', 'aud', 'exp', 'jti'), json: oddNumber }),
      fc.record({ kind: fc.constant('encoding' as const), how: fc.constantFrom<Encoding>(...encodings) }),
    );
    // jku and x5u name no key oidc-provider would fetch (the client's registered keys are the only
    // ones), and a kid that is not a string names none: the registered keys are tried. A kid that
    // names another key is refused.
    const harmless = (m: Mutation) =>
      (m.kind === 'header' && (m.field === 'jku' || m.field === 'x5u' || (m.field === 'kid' && typeof m.value !== 'string'))) ||
      (m.kind === 'claim' && m.field === 'x');
    await fc.assert(
      fc.asyncProperty(assertionMutation, async (m) => {
        const t = now();
        const header = { alg: 'ES256', kid: clientKey.kid, typ: 'JWT' };
        const payload = { iss: agent.clientId, sub: agent.clientId, aud: server.issuer, jti: randomUUID(), iat: t, exp: t + 120 };
        const answer = await tokenAnswer(server.issuer, params(mutatedJws(clientKey, header, payload, m)));
        const what = JSON.stringify(m);
        assertWellFormed(answer, what);
        if (harmless(m)) assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body)}`);
        else if (m.kind === 'encoding' && (m.how === 'extra segment' || m.how === 'bad character')) {
          // Not a compact JWS at all: a malformed parameter (RFC 6749 §5.2), before any client is named.
          assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
          assert.equal(answer.body.error, 'invalid_request', what);
        } else {
          assert.equal(answer.status, 401, `${what}: ${JSON.stringify(answer.body)}`);
          assert.equal(answer.body.error, 'invalid_client', what);
        }
      }),
      RUNS,
    );
  });
});
