/**
 * RFC 6750 on the resource server's side: reading the bearer token from the Authorization header
 * and answering a refusal with the right status, WWW-Authenticate challenge and JSON body. The
 * same for DPoP-bound tokens (RFC 9449 §7.1): `Authorization: DPoP`, challenges of the DPoP scheme.
 */

export type BearerErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof' | 'use_dpop_nonce';

const STATUS: Record<BearerErrorCode, number> = {
  invalid_request: 400,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_dpop_proof: 401,
  use_dpop_nonce: 401,
};

/** How the resource server takes DPoP, for its challenges. */
export interface ChallengeOptions {
  /** Algorithms offered for proofs; absent: the server takes Bearer tokens only. */
  dpopAlgs?: readonly string[];
  /** Whether Bearer tokens are accepted too (false when the API requires DPoP). */
  bearer?: boolean;
}

/** A refused request. `code` is undefined when the request carried no token at all (RFC 6750 §3.1). */
export class BearerError extends Error {
  readonly code: BearerErrorCode | undefined;
  readonly status: number;
  /** Scopes the request needs, named in the challenge (insufficient_scope, or to guide a client). */
  readonly scopes: readonly string[];
  /** The scheme the refused request used (or should have): its challenge is of that scheme. */
  scheme: 'Bearer' | 'DPoP' = 'Bearer';
  /** With use_dpop_nonce: the nonce to send (the DPoP-Nonce response header). */
  dpopNonce: string | undefined;

  constructor(code: BearerErrorCode | undefined, description: string, scopes: readonly string[] = []) {
    super(description);
    this.name = 'BearerError';
    this.code = code;
    this.status = code ? STATUS[code] : 401;
    this.scopes = scopes;
  }

  /** The WWW-Authenticate value: realm-free, with where to find the resource's metadata (RFC 9728 §5.1). */
  challenge(resourceMetadataUrl: string, options: ChallengeOptions = {}): string {
    const params: [string, string][] = [];
    if (this.code) params.push(['error', this.code], ['error_description', this.message]);
    if (this.scopes.length > 0) params.push(['scope', this.scopes.join(' ')]);
    params.push(['resource_metadata', resourceMetadataUrl]);
    const render = (scheme: string, list: [string, string][]) => `${scheme} ${list.map(([k, v]) => `${k}="${quoted(v)}"`).join(', ')}`;
    const bearer = options.bearer ?? true;
    if (!options.dpopAlgs) return render('Bearer', params);
    const dpop = render('DPoP', [...params, ['algs', options.dpopAlgs.join(' ')]]);
    // The error belongs to the scheme the request used; with no token at all, offer every scheme.
    if (this.code) return this.scheme === 'DPoP' || !bearer ? dpop : render('Bearer', params);
    return bearer ? `${render('Bearer', params)}, ${dpop}` : dpop;
  }

  /** The JSON body: RFC 6749-style error members; no error code when no token was sent, as in the header. */
  body(): Record<string, string> {
    return this.code ? { error: this.code, error_description: this.message } : { error_description: this.message };
  }
}

/** Quoted-string content (RFC 9110 §5.6.4): no quotes, backslashes or control characters. */
const quoted = (v: string) => v.replace(/[\\"]/g, "'").replace(/[\x00-\x1f\x7f]/g, ' ');

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const MAX_TOKEN_LENGTH = 8192;

/** The bearer token of an Authorization header, or a BearerError saying what is wrong with it. */
export function bearerToken(authorization: string | string[] | undefined, scopes: readonly string[] = []): string {
  const { scheme, token } = authorizationToken(authorization, scopes, false);
  if (scheme !== 'bearer') throw new BearerError(undefined, 'an access token is required (Bearer)', scopes);
  return token;
}

/** The token of an Authorization header of the Bearer or (when `dpop`) the DPoP scheme. */
export function authorizationToken(
  authorization: string | string[] | undefined,
  scopes: readonly string[] = [],
  dpop = true,
): { scheme: 'bearer' | 'dpop'; token: string } {
  if (Array.isArray(authorization)) throw new BearerError('invalid_request', 'more than one Authorization header', scopes);
  if (!authorization) throw new BearerError(undefined, 'an access token is required', scopes);
  const space = authorization.indexOf(' ');
  const scheme = (space === -1 ? authorization : authorization.slice(0, space)).toLowerCase();
  if (scheme !== 'bearer' && !(dpop && scheme === 'dpop'))
    throw new BearerError(undefined, `an access token is required (Bearer${dpop ? ' or DPoP' : ''})`, scopes);
  const token = authorization.slice(space + 1).trim();
  if (space === -1 || !token) throw new BearerError('invalid_request', 'the Authorization header has no token', scopes);
  if (token.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(token)) throw new BearerError('invalid_request', 'the access token is malformed', scopes);
  return { scheme: scheme as 'bearer' | 'dpop', token };
}
