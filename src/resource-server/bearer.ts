/**
 * RFC 6750 on the resource server's side: reading the bearer token from the Authorization header
 * and answering a refusal with the right status, WWW-Authenticate challenge and JSON body.
 */

export type BearerErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'insufficient_user_authentication';

const STATUS: Record<BearerErrorCode, number> = { invalid_request: 400, invalid_token: 401, insufficient_scope: 403, insufficient_user_authentication: 401 };

/** What a step-up challenge asks the client to get (RFC 9470 §3): a level, a recent sign-in, or both. */
export interface StepUp {
  acrValues?: readonly string[];
  /** Seconds: the user must have signed in at most this long ago. */
  maxAge?: number;
}

/** A refused request. `code` is undefined when the request carried no token at all (RFC 6750 §3.1). */
export class BearerError extends Error {
  readonly code: BearerErrorCode | undefined;
  readonly status: number;
  /** Scopes the request needs, named in the challenge (insufficient_scope, or to guide a client). */
  readonly scopes: readonly string[];

  /** For insufficient_user_authentication: what to ask agentauth for (acr_values, max_age). */
  readonly stepUp: StepUp | undefined;

  constructor(code: BearerErrorCode | undefined, description: string, scopes: readonly string[] = [], stepUp?: StepUp) {
    super(description);
    this.name = 'BearerError';
    this.code = code;
    this.status = code ? STATUS[code] : 401;
    this.scopes = scopes;
    this.stepUp = stepUp;
  }

  /** The WWW-Authenticate value: realm-free, with where to find the resource's metadata (RFC 9728 §5.1). */
  challenge(resourceMetadataUrl: string): string {
    const params: [string, string][] = [];
    if (this.code) params.push(['error', this.code], ['error_description', this.message]);
    if (this.scopes.length > 0) params.push(['scope', this.scopes.join(' ')]);
    if (this.stepUp?.acrValues?.length) params.push(['acr_values', this.stepUp.acrValues.join(' ')]);
    if (this.stepUp?.maxAge !== undefined) params.push(['max_age', String(this.stepUp.maxAge)]);
    params.push(['resource_metadata', resourceMetadataUrl]);
    return `Bearer ${params.map(([k, v]) => `${k}="${quoted(v)}"`).join(', ')}`;
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
  if (Array.isArray(authorization)) throw new BearerError('invalid_request', 'more than one Authorization header', scopes);
  if (!authorization) throw new BearerError(undefined, 'an access token is required', scopes);
  const space = authorization.indexOf(' ');
  const scheme = space === -1 ? authorization : authorization.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') throw new BearerError(undefined, 'an access token is required (Bearer)', scopes);
  const token = authorization.slice(space + 1).trim();
  if (space === -1 || !token) throw new BearerError('invalid_request', 'the Authorization header has no token', scopes);
  if (token.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(token)) throw new BearerError('invalid_request', 'the access token is malformed', scopes);
  return token;
}
