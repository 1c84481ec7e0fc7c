/**
 * Talking to an upstream provider, always through the one outbound module (src/net/outbound.ts):
 * discovery (RFC 8414, then OpenID Connect Discovery), the authorization code exchange with PKCE,
 * refresh, and revocation (RFC 7009). The client authenticates with client_secret_basic
 * (RFC 6749 §2.3.1, id and secret form-encoded first).
 */
import { AgentauthError } from '../errors.ts';
import type { Outbound } from '../net/outbound.ts';
import type { UpstreamTokens } from './store.ts';

/**
 * The upstream refused (`upstream` is its OAuth error code) or could not be used (`unreachable`,
 * `bad_response`). One of ours (src/errors.ts); the vault turns it into what the caller is told,
 * and one that escapes is a hidden 502.
 */
export class UpstreamError extends AgentauthError {
  readonly upstream: string;
  constructor(upstream: string, description: string) {
    super(502, 'upstream_error', description, { expose: false });
    this.upstream = upstream;
  }
}

export interface DiscoveredEndpoints {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint: string | null;
  issParameterSupported: boolean;
}

/** RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path. */
function metadataUrls(issuer: string): string[] {
  const url = new URL(issuer);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  return [`${url.origin}/.well-known/oauth-authorization-server${path}`, `${url.origin}${path}/.well-known/openid-configuration`];
}

async function getJson(outbound: Outbound, url: string): Promise<Record<string, unknown> | undefined> {
  const res = await outbound.request(url, { headers: { accept: 'application/json' } });
  if (res.status !== 200) return undefined;
  try {
    const body = JSON.parse(res.body.toString('utf8')) as unknown;
    return body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const stringField = (doc: Record<string, unknown>, name: string) => (typeof doc[name] === 'string' ? (doc[name] as string) : undefined);

/** Reads the provider's metadata; its `issuer` must be exactly the one asked for (RFC 8414 §3.3). */
export async function discover(outbound: Outbound, issuer: string): Promise<DiscoveredEndpoints> {
  for (const url of metadataUrls(issuer)) {
    let doc: Record<string, unknown> | undefined;
    try {
      doc = await getJson(outbound, url);
    } catch (err) {
      throw new UpstreamError('unreachable', `${url}: ${(err as Error).message}`);
    }
    if (!doc) continue;
    if (doc.issuer !== issuer) throw new UpstreamError('bad_response', `${url} names issuer ${JSON.stringify(doc.issuer)}, not ${issuer}`);
    const authorizationEndpoint = stringField(doc, 'authorization_endpoint');
    const tokenEndpoint = stringField(doc, 'token_endpoint');
    if (!authorizationEndpoint || !tokenEndpoint) throw new UpstreamError('bad_response', `${url} lacks authorization_endpoint or token_endpoint`);
    return {
      issuer,
      authorizationEndpoint,
      tokenEndpoint,
      revocationEndpoint: stringField(doc, 'revocation_endpoint') ?? null,
      issParameterSupported: doc.authorization_response_iss_parameter_supported === true,
    };
  }
  throw new UpstreamError('bad_response', `no authorization server metadata at ${issuer}`);
}

export interface UpstreamClient {
  clientId: string;
  clientSecret: string;
}

const basic = (c: UpstreamClient) => `Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64')}`;

async function postForm(outbound: Outbound, url: string, client: UpstreamClient, form: Record<string, string>) {
  try {
    return await outbound.request(url, {
      method: 'POST',
      headers: { authorization: basic(client), 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
    });
  } catch (err) {
    throw new UpstreamError('unreachable', `${new URL(url).origin}: ${(err as Error).message}`);
  }
}

export interface TokenResult {
  tokens: UpstreamTokens;
  /** The scopes granted, when the provider says (RFC 6749 §5.1); else those requested. */
  scope: string[] | undefined;
}

/** A token endpoint answer, checked: an access token, a lifetime, perhaps a (rotated) refresh token. */
function tokenResult(status: number, raw: Buffer, previousRefresh: string | null, now: number): TokenResult {
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new UpstreamError('bad_response', `the token endpoint answered ${status} without JSON`);
  }
  if (status !== 200) {
    const error = typeof body.error === 'string' ? body.error : 'bad_response';
    throw new UpstreamError(error, `the token endpoint answered ${status} ${error}`);
  }
  if (typeof body.access_token !== 'string' || !body.access_token) throw new UpstreamError('bad_response', 'the token endpoint gave no access_token');
  const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : null;
  return {
    tokens: {
      accessToken: body.access_token,
      tokenType: typeof body.token_type === 'string' ? body.token_type : 'Bearer',
      // A provider that does not rotate sends no new refresh token: the old one stays good.
      refreshToken: typeof body.refresh_token === 'string' ? body.refresh_token : previousRefresh,
      expiresAt: expiresIn === null ? null : now + expiresIn * 1000,
    },
    scope: typeof body.scope === 'string' ? body.scope.split(' ').filter(Boolean) : undefined,
  };
}

export async function exchangeCode(
  outbound: Outbound,
  tokenEndpoint: string,
  client: UpstreamClient,
  code: string,
  verifier: string,
  redirectUri: string,
): Promise<TokenResult> {
  const now = Date.now();
  const res = await postForm(outbound, tokenEndpoint, client, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri });
  return tokenResult(res.status, res.body, null, now);
}

export async function refresh(outbound: Outbound, tokenEndpoint: string, client: UpstreamClient, refreshToken: string): Promise<TokenResult> {
  const now = Date.now();
  const res = await postForm(outbound, tokenEndpoint, client, { grant_type: 'refresh_token', refresh_token: refreshToken });
  return tokenResult(res.status, res.body, refreshToken, now);
}

/** RFC 7009: revoking the refresh token revokes the grant's access tokens too (§2.1, where supported). */
export async function revoke(outbound: Outbound, revocationEndpoint: string, client: UpstreamClient, token: string, hint: 'refresh_token' | 'access_token') {
  const res = await postForm(outbound, revocationEndpoint, client, { token, token_type_hint: hint });
  if (res.status !== 200) throw new UpstreamError('bad_response', `the revocation endpoint answered ${res.status}`);
}
