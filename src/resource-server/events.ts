/**
 * Receiving agentauth's revocation events: Security Event Tokens (RFC 8417) pushed per RFC 8935.
 * The same verifier serves a resource server (aud = its identifier) and an agent (aud = its
 * client_id). Delivery is at least once, so a repeated jti is acknowledged and otherwise ignored.
 */
import { errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';

/** agentauth's event type: a grant (what a user allowed an agent) was revoked. */
export const GRANT_REVOKED_EVENT = 'https://agentauth.dev/secevent/grant-revoked';

export interface GrantRevoked {
  jti: string;
  grantId: string;
  clientId: string;
  subject: string;
  reason: string;
  revokedAt: number;
  /** For a delegation (RFC 8693 token exchange): its agents, the first one first; else empty. */
  delegationChain: string[];
}

/** RFC 8935 §2.3 error codes. */
export type EventErrorCode = 'invalid_request' | 'invalid_key' | 'invalid_issuer' | 'invalid_audience' | 'authentication_failed';

export class EventError extends Error {
  readonly code: EventErrorCode;
  constructor(code: EventErrorCode, description: string) {
    super(description);
    this.name = 'EventError';
    this.code = code;
  }
  /** The RFC 8935 §2.3 body for a 400 answer. */
  body(): { err: EventErrorCode; description: string } {
    return { err: this.code, description: this.message };
  }
}

const MAX_SEEN = 10_000;
const MAX_SET_LENGTH = 16 * 1024;

export interface EventVerifierOptions {
  issuer: string;
  /** Who the events are for: the resource server's identifier or the agent's client_id. */
  audience: string;
  /** The issuer's signing keys (jose's createRemoteJWKSet over agentauth's jwks_uri). */
  keys: JWTVerifyGetKey;
}

/** Returns a function that verifies one pushed SET and returns the revocation, or undefined for a duplicate. */
export function createRevocationEventVerifier(options: EventVerifierOptions): (set: string) => Promise<GrantRevoked | undefined> {
  const seen = new Set<string>();
  return async (set) => {
    if (set.length === 0 || set.length > MAX_SET_LENGTH) throw new EventError('invalid_request', 'the body must be one Security Event Token');
    const claims = await verifySignature(set, options);
    const event = readGrantRevoked(claims);
    if (seen.has(event.jti)) return undefined;
    seen.add(event.jti);
    if (seen.size > MAX_SEEN) seen.delete(seen.values().next().value!);
    return event;
  };
}

async function verifySignature(set: string, options: EventVerifierOptions): Promise<Record<string, unknown>> {
  try {
    const { payload } = await jwtVerify(set, options.keys, { issuer: options.issuer, audience: options.audience, typ: 'secevent+jwt', algorithms: ['ES256'] });
    return payload as Record<string, unknown>;
  } catch (error) {
    if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === 'iss')
      throw new EventError('invalid_issuer', 'the event is from another issuer');
    if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === 'aud')
      throw new EventError('invalid_audience', 'the event is for someone else');
    if (error instanceof joseErrors.JWKSNoMatchingKey) throw new EventError('invalid_key', 'the event is signed with an unknown key');
    if (error instanceof joseErrors.JWSSignatureVerificationFailed) throw new EventError('authentication_failed', 'the event signature does not verify');
    throw new EventError('invalid_request', 'the event is not a valid Security Event Token');
  }
}

function readGrantRevoked(claims: Record<string, unknown>): GrantRevoked {
  const events = claims.events as Record<string, unknown> | undefined;
  const body = events?.[GRANT_REVOKED_EVENT] as Record<string, unknown> | undefined;
  const text = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length <= 512 ? v : undefined);
  const jti = text(claims.jti);
  const grantId = text(body?.grant_id);
  const clientId = text(body?.client_id);
  const subject = text(body?.sub);
  if (!jti || !grantId || !clientId || !subject)
    throw new EventError('invalid_request', `the event must carry a jti and a ${GRANT_REVOKED_EVENT} event with grant_id, client_id and sub`);
  return {
    jti,
    grantId,
    clientId,
    subject,
    reason: text(body?.reason) ?? 'unspecified',
    revokedAt: typeof body?.revoked_at === 'number' ? body.revoked_at : 0,
    delegationChain: Array.isArray(body?.delegation_chain) ? body.delegation_chain.filter((c): c is string => text(c) !== undefined).slice(0, 16) : [],
  };
}
