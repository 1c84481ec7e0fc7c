/**
 * Who may act for a user, and what an exchanged token may hold (RFC 8693). Pure decisions over
 * what the caller looked up; the token exchange grant (oauth/token-exchange.ts) applies them.
 *
 * A client may exchange a subject token only if
 *   (a) the subject token's client names it as a delegate (an operator's setting, shown to the
 *       user at consent), or
 *   (b) it introspects for the resource server the subject token is for, and asks for a token
 *       for another registered resource server (an MCP server calling a downstream API for the
 *       user without passing its own token on).
 * The new token only narrows: scopes within the subject token's (and the acting client's own
 * allow-list), an audience the rule allows, a lifetime within what the subject token has left.
 */

/** Token exchanges one chain may hold after the user's consent to the first agent. */
export const MAX_DELEGATION_DEPTH = 3;

/** What an exchange starts from: an access token agentauth issued, active, of a live grant. */
export interface SubjectToken {
  clientId: string;
  accountId: string;
  grantId: string;
  scopes: string[];
  /** Its audience (a resource server identifier), if it was issued for one. */
  audience: string | undefined;
  /** Epoch seconds. */
  expiresAt: number;
  /** The clients of its chain, the first agent first and the subject token's own client last. */
  chain: string[];
}

export interface ExchangeRequest {
  /** The authenticated client, which is the actor (an actor_token must prove this same client). */
  actor: string;
  /** The actor's registered scope allow-list; undefined when it registered none. */
  actorScopes: string[] | undefined;
  /** The requested scopes; undefined when `scope` was left out. */
  scopes: string[] | undefined;
  /** The one target (resource or audience); undefined when left out. */
  target: string | undefined;
}

export interface TargetServer {
  identifier: string;
  scopes: string[];
  introspectorClient: string | null;
}

export interface ExchangeFacts {
  /** Whether the subject token's client named the actor as a delegate. */
  actorIsDelegate: boolean;
  /** The resource server of the subject token's audience, if registered. */
  subjectServer: TargetServer | undefined;
  /** The registered resource server named as target, if any. */
  targetServer: TargetServer | undefined;
}

/** How the actor came to be allowed; recorded in the audit trail. */
export type Basis = 'delegate' | 'resource_server';

export type Decision =
  | { allowed: true; basis: Basis; scopes: string[]; audience: string | undefined }
  /** `error` is the RFC code: invalid_request (RFC 8693 §2.2.2), invalid_target, invalid_scope. */
  | { allowed: false; error: 'invalid_request' | 'invalid_target' | 'invalid_scope'; reason: string };

const refuse = (error: 'invalid_request' | 'invalid_target' | 'invalid_scope', reason: string): Decision => ({ allowed: false, error, reason });

/** Decides an exchange; the same checks whether the actor was proven by actor_token or by client authentication. */
export function decideExchange(subject: SubjectToken, request: ExchangeRequest, facts: ExchangeFacts): Decision {
  // RFC 8693 §2.2.2: a subject token unacceptable by policy is invalid_request.
  if (subject.chain.includes(request.actor)) return refuse('invalid_request', 'the actor already acts in this delegation chain');
  if (subject.chain.length - 1 >= MAX_DELEGATION_DEPTH)
    return refuse('invalid_request', `a delegation chain may hold at most ${MAX_DELEGATION_DEPTH} token exchanges`);

  const servesSubject = facts.subjectServer !== undefined && facts.subjectServer.introspectorClient === request.actor;
  let basis: Basis;
  let audience: string | undefined;
  let ceiling = subject.scopes;
  if (facts.actorIsDelegate) {
    basis = 'delegate';
    // A delegate works on what it was handed: the same audience, never another.
    if (request.target !== undefined && request.target !== subject.audience)
      return refuse('invalid_target', 'a delegate may only ask for the audience of the subject token');
    audience = subject.audience;
  } else if (servesSubject) {
    basis = 'resource_server';
    if (request.target === undefined) return refuse('invalid_target', 'a resource server must name the resource it calls (resource or audience)');
    if (request.target === subject.audience) return refuse('invalid_target', 'the target must be another resource server than the subject token is for');
    if (!facts.targetServer) return refuse('invalid_target', 'unknown resource server');
    // The resource server calls the target only with scopes it is registered for (its allow-list).
    if (request.actorScopes === undefined) return refuse('invalid_scope', 'this resource server registered no scopes it may use downstream');
    audience = facts.targetServer.identifier;
    const targetScopes = new Set(facts.targetServer.scopes);
    ceiling = ceiling.filter((s) => targetScopes.has(s));
  } else {
    return refuse('invalid_request', 'the client is not allowed to act for this subject token');
  }
  if (request.actorScopes !== undefined) {
    const own = new Set(request.actorScopes);
    ceiling = ceiling.filter((s) => own.has(s));
  }
  const allowed = new Set(ceiling);
  const scopes = request.scopes ?? ceiling;
  const wider = scopes.filter((s) => !allowed.has(s));
  if (wider.length) return refuse('invalid_scope', `not within the subject token's scopes for this actor: ${wider.join(' ')}`);
  if (scopes.length === 0) return refuse('invalid_scope', 'no scope of the subject token is left for this actor');
  return { allowed: true, basis, scopes: [...new Set(scopes)], audience };
}

/**
 * RFC 8693 §4.1 `act`: the current actor outermost, prior actors nested, the first agent (the
 * client the user consented to) innermost. `chain` is first agent first.
 */
export function actClaim(chain: readonly string[]): Record<string, unknown> | undefined {
  let act: Record<string, unknown> | undefined;
  for (const clientId of chain) act = act ? { sub: clientId, act } : { sub: clientId };
  return act;
}

/** The clients named by a nested `act` claim, first agent first (the inverse of actClaim). */
export function chainOfAct(act: unknown): string[] {
  const chain: string[] = [];
  let current = act;
  for (let i = 0; i < 16 && current && typeof current === 'object'; i++) {
    const { sub, act: inner } = current as { sub?: unknown; act?: unknown };
    if (typeof sub === 'string') chain.unshift(sub);
    current = inner;
  }
  return chain;
}

/**
 * RFC 8693 §4.4 `may_act`: who may become the actor of this token. One delegate is named as the
 * RFC's example does (`{"sub": …}`); several as `{"sub_any": [...]}`, since the member holds one
 * identity. Informational: the exchange decides by the policy as it is at exchange time.
 */
export function mayActClaim(delegates: readonly string[]): Record<string, unknown> | undefined {
  if (delegates.length === 0) return undefined;
  return delegates.length === 1 ? { sub: delegates[0] } : { sub_any: [...delegates] };
}
