/**
 * The OAuth side of the benchmark, the same for agentauth and the bare provider: client
 * assertions, the code flow over HTTP (login and consent pages included), and the data each
 * scenario needs, prepared before it is measured.
 */
import { createHash, createSign, randomBytes, type KeyObject } from 'node:crypto';
import { authorize, CookieJar } from '../../test/helpers/browserless.ts';
import { mapConcurrently } from './load.ts';

/** https, so a grant covers later requests (oidc-provider asks native, loopback clients every time). */
export const REDIRECT_URI = 'https://client.bench.example/cb';
export const SCOPE = 'bench:read';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A server set up for the benchmark: its clients, user and resource servers. */
export interface OAuthFixture {
  /** The issuer identifier (the audience of client assertions). */
  issuer: string;
  /** Base URLs of its processes (the issuer's first). */
  urls: string[];
  key: { privateKey: KeyObject; kid: string };
  /** A client_credentials client. */
  ccClient: string;
  /** The client the opaque resource server introspects as. */
  introspector: string;
  /** Confidential code-flow clients (authorization_code, refresh_token). */
  flowClients: string[];
  user: { id: string; username: string; password: string };
  resources: { opaque: string; jwt: string };
}

const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');

export function signAssertion(fx: OAuthFixture, clientId: string): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: 'ES256', kid: fx.key.kid, typ: 'JWT' }));
  const payload = b64(JSON.stringify({ iss: clientId, sub: clientId, aud: fx.issuer, jti: randomBytes(16).toString('base64url'), iat: now, exp: now + 280 }));
  const signature = createSign('sha256').update(`${header}.${payload}`).sign({ key: fx.key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${b64(signature)}`;
}

/**
 * Assertions for one client, `prepared` of them signed now; past those, each is signed when
 * asked for (on the load generator's core), so a run never reuses one.
 */
export function assertionSource(fx: OAuthFixture, clientId: string, prepared: number): () => string {
  const pool = Array.from({ length: prepared }, () => signAssertion(fx, clientId));
  let next = 0;
  return () => (next < pool.length ? pool[next++]! : signAssertion(fx, clientId));
}

export function form(params: Record<string, string>): string {
  return new URLSearchParams(params).toString();
}

export const clientAuth = (clientId: string, assertion: string) => ({
  client_assertion_type: ASSERTION_TYPE,
  client_assertion: assertion,
  client_id: clientId,
});

export async function post(url: string, body: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
}

export interface TokenSet {
  clientId: string;
  accessToken: string;
  refreshToken: string;
}

/** A cookie jar that counts the requests made with it. */
export class CountingJar extends CookieJar {
  requests = 0;
  override absorb(res: Response): void {
    this.requests++;
    super.absorb(res);
  }
}

/**
 * The authorization code flow with PKCE through the server's pages: authorization request, sign
 * in and consent unless the jar's session and grant already cover them, then the code exchange.
 */
export async function codeFlow(
  fx: OAuthFixture,
  clientId: string,
  jar = new CountingJar(),
  assertion = signAssertion(fx, clientId),
): Promise<TokenSet & { requests: number }> {
  const verifier = randomBytes(32).toString('base64url');
  const url = new URL(`${fx.issuer}/auth`);
  url.search = form({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    scope: SCOPE,
    state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });
  const { callback } = await authorize(fx.issuer, url, fx.user, {}, jar);
  const code = callback.searchParams.get('code');
  if (!code) throw new Error(`no code in the callback: ${callback.search}`);
  const res = await post(
    `${fx.issuer}/token`,
    form({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, ...clientAuth(clientId, assertion) }),
  );
  const body = (await res.json()) as { access_token?: string; refresh_token?: string; error?: string };
  if (res.status !== 200 || !body.access_token || !body.refresh_token) throw new Error(`code exchange: ${res.status} ${JSON.stringify(body.error)}`);
  return { clientId, accessToken: body.access_token, refreshToken: body.refresh_token, requests: jar.requests + 1 };
}

/**
 * One grant per (session, client): each session signs in once, then consents for every client in
 * turn (interactions of one browser cannot overlap: their cookies would clash). Afterwards an
 * authorization request in that session needs no page at all.
 */
async function establishGrants(fx: OAuthFixture, sessions: number): Promise<{ jar: CountingJar; set: TokenSet }[]> {
  const perSession = await mapConcurrently(Array.from({ length: sessions }), 4, async () => {
    const jar = new CountingJar();
    const grants: { jar: CountingJar; set: TokenSet }[] = [];
    for (const clientId of fx.flowClients) grants.push({ jar, set: await codeFlow(fx, clientId, jar) });
    return grants;
  });
  // Interleaved: consecutive entries belong to different sessions and clients.
  return fx.flowClients.flatMap((_, c) => perSession.map((grants) => grants[c]!));
}

/**
 * `count` independent refresh tokens: several codes per grant, listed so that consecutive tokens
 * belong to different grants (agentauth serialises refreshes of one grant on its row lock; the
 * benchmark measures throughput, not that queue).
 */
export async function prepareRefreshTokens(fx: OAuthFixture, count: number, sessions: number, concurrency: number): Promise<TokenSet[]> {
  const grants = await establishGrants(fx, sessions);
  const more = await mapConcurrently(
    Array.from({ length: Math.max(0, count - grants.length) }, (_, i) => grants[i % grants.length]!),
    concurrency,
    // Concurrent flows share a session's cookies; one that lost its interaction cookie to another
    // (a 400 at the login form) is simply run again.
    async ({ jar, set }) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await codeFlow(fx, set.clientId, jar);
        } catch (err) {
          if (attempt === 3) throw err;
        }
      }
    },
  );
  return [...grants.map((g) => g.set), ...more];
}

/** Refreshes once; the new token set. */
export async function refresh(fx: OAuthFixture, tokens: TokenSet): Promise<TokenSet> {
  const res = await post(
    `${fx.issuer}/token`,
    form({ grant_type: 'refresh_token', refresh_token: tokens.refreshToken, ...clientAuth(tokens.clientId, signAssertion(fx, tokens.clientId)) }),
  );
  const body = (await res.json()) as { access_token?: string; refresh_token?: string; error?: string };
  if (res.status !== 200 || !body.access_token || !body.refresh_token) throw new Error(`refresh: ${res.status} ${JSON.stringify(body.error)}`);
  return { clientId: tokens.clientId, accessToken: body.access_token, refreshToken: body.refresh_token };
}

/**
 * `count` grants each holding about `tokens` credentials: a code exchange (code, access and
 * refresh token), then refreshes, each adding an access and a refresh token.
 */
export async function prepareLoadedGrants(fx: OAuthFixture, count: number, tokens: number, concurrency: number): Promise<TokenSet[]> {
  const grants = (await establishGrants(fx, Math.ceil(count / fx.flowClients.length))).slice(0, count);
  return mapConcurrently(grants, concurrency, async ({ set: first }) => {
    let set = first;
    for (let held = 3; held < tokens; held += 2) set = await refresh(fx, set);
    return set;
  });
}

/** An access token for a resource server, from client_credentials. */
export async function clientCredentialsToken(fx: OAuthFixture, resource: string): Promise<string> {
  const res = await post(
    `${fx.issuer}/token`,
    form({ grant_type: 'client_credentials', scope: SCOPE, resource, ...clientAuth(fx.ccClient, signAssertion(fx, fx.ccClient)) }),
  );
  const body = (await res.json()) as { access_token?: string; error?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`client_credentials: ${res.status} ${JSON.stringify(body.error)}`);
  return body.access_token;
}

/** Whether introspection, by the token's own client, says the token is active. */
export async function isActive(fx: OAuthFixture, clientId: string, token: string): Promise<boolean> {
  const res = await post(`${fx.issuer}/token/introspection`, form({ token, ...clientAuth(clientId, signAssertion(fx, clientId)) }));
  return ((await res.json()) as { active?: boolean }).active === true;
}
