/**
 * The token exchange grant (RFC 8693): an agent hands part of a user's authorization to another
 * agent, or a resource server gets a token for a downstream API, without passing tokens along.
 *
 * oidc-provider authenticates the client (private_key_jwt) and checks that it registered the
 * grant type; this handler adds the policy (src/delegation/policy.ts) and the chain:
 * - the subject token is an access token agentauth issued (opaque, or a JWT verified with the
 *   provider's own keys), active, of a live grant whose client and user it names;
 * - the actor is the authenticated client; an actor_token, when sent, must prove that same client,
 *   and then the same checks run as without one (Keycloak #52691);
 * - who may act is the operator's delegate list or the resource-server rule, never the caller's
 *   say nor the token's may_act (Keycloak #50690);
 * - the new token belongs to a child grant of the subject token's grant, one per acting client,
 *   so revoking the user's grant kills every exchanged token at once, and the user can revoke one
 *   delegate alone; it carries `act` (the chain), lives at most as long as the subject token has
 *   left, and comes without a refresh token.
 * A refusal writes nothing but its audit row. See docs/delegation.md.
 */
import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, type JWK } from 'jose';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import ResourceServer from 'oidc-provider/lib/helpers/resource_server.js';
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import type { AuditLog } from '../audit/log.ts';
import { actClaim, decideExchange, type Basis, type SubjectToken, type TargetServer } from '../delegation/policy.ts';
import { isDelegate } from '../delegation/store.ts';
import { findChildGrant, grantChain, insertChildGrant, liveGrantRow, lockGrant, upsertGrant } from '../grants/store.ts';
import type { ResourceServer as RegisteredServer } from '../resource-servers/store.ts';
import { findArtifact, recordOnce } from '../artifacts/store.ts';
import { hashId } from '../storage/hash-id.ts';
import type { Db } from '../storage/db.ts';
import { connectionOfTarget, exchangeForConnection } from '../connections/exchange.ts';
import type { VaultDeps } from '../connections/vault.ts';
import { AgentauthError } from '../errors.ts';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

const PARAMETERS = ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'scope', 'resource', 'audience'];
const MAX_TOKEN_LENGTH = 8192;
/** An actor assertion (actor_token_type jwt) is as short-lived as a client assertion. */
const MAX_ACTOR_ASSERTION_SECONDS = 300;

export interface TokenExchangeDeps {
  db: Db;
  audit: AuditLog;
  /** Connected accounts: a target naming a connection is answered from the vault. */
  vault: VaultDeps;
  findResourceServer(identifier: string): Promise<RegisteredServer | undefined>;
}

/** What the audit row of the issued token names (read in provider-events.ts). */
export interface ExchangeRecord {
  chain: string[];
  basis: Basis;
  subjectGrantId: string;
  subjectTokenSha256: string;
}

export const exchangeOf = (ctx: { state: unknown }): ExchangeRecord | undefined => (ctx.state as { tokenExchange?: ExchangeRecord }).tokenExchange;

/** Whether this request was answered with an upstream token (audited by the vault, not as token.issued). */
export const answeredFromVault = (ctx: { state: unknown }): boolean => (ctx.state as { upstreamToken?: boolean }).upstreamToken === true;

type RefusalCode = 'invalid_request' | 'invalid_target' | 'invalid_scope';
const refusalError = (code: RefusalCode, reason: string): Error =>
  code === 'invalid_target'
    ? new errors.InvalidTarget(reason)
    : code === 'invalid_scope'
      ? new errors.InvalidScope(reason, '')
      : new errors.InvalidRequest(reason);

const looksLikeJwt = (value: string) => value.split('.').length === 3;
const words = (value: unknown) => (typeof value === 'string' ? [...new Set(value.split(' ').filter(Boolean))] : []);

export function installTokenExchange(provider: Provider, deps: TokenExchangeDeps): void {
  const { db, audit } = deps;
  const internals = instance(provider);

  /** Public keys of the provider: a JWT access token was signed by one of them. */
  const providerKeys = () => createLocalJWKSet({ keys: [...internals.keystore].map((jwk) => internals.keystore.getKeyObject(jwk, true) as unknown as JWK) });

  /**
   * An active access token agentauth issued, as {clientId, accountId, grantId, scope, aud, exp}.
   * Opaque tokens are read from storage (never trusting the caller); JWT access tokens are not
   * stored, so their signature by the provider's keys and their expiry make them ours, and the
   * caller then checks that the grant they name still lives.
   */
  async function activeToken(value: string, model: 'AccessToken' | 'ClientCredentials'): Promise<Record<string, unknown> | undefined> {
    const now = Math.floor(Date.now() / 1000);
    if (looksLikeJwt(value)) {
      try {
        const { payload } = await jwtVerify(value, providerKeys(), { issuer: provider.issuer, typ: 'at+jwt' });
        const clientId = payload.client_id;
        const user = payload.sub !== clientId;
        if (model === 'AccessToken' && !user) return undefined;
        return {
          clientId,
          accountId: user ? payload.sub : undefined,
          grantId: payload.grant_id,
          scope: payload.scope,
          aud: payload.aud,
          exp: payload.exp,
          cnf: payload.cnf,
        };
      } catch {
        return undefined;
      }
    }
    const stored = await findArtifact(db, model, value);
    const exp = stored?.payload.exp;
    if (!stored || typeof exp !== 'number' || exp <= now) return undefined;
    return stored.payload;
  }

  /** The subject token with its grant and chain, or why it is not acceptable. */
  async function subjectOf(value: string, type: string): Promise<SubjectToken | string> {
    if (type !== ACCESS_TOKEN_TYPE && !(type === JWT_TOKEN_TYPE && looksLikeJwt(value)))
      return 'subject_token_type must be urn:ietf:params:oauth:token-type:access_token (or jwt for a JWT access token)';
    const token = await activeToken(value, 'AccessToken');
    const { grantId, accountId, clientId } = (token ?? {}) as { grantId?: unknown; accountId?: unknown; clientId?: unknown };
    if (!token || typeof grantId !== 'string' || typeof accountId !== 'string' || typeof clientId !== 'string') return 'the subject token is not active';
    // A DPoP-bound subject token is accepted without a proof of its key: in a delegation the actor
    // never holds the previous link's key, and what gates the exchange is the actor's own
    // authentication and the policy, not possession of the token. The issued token is bound to
    // the actor's proof, when it sends one (below).
    // The grant row first (lock order); a revoked or expired grant leaves no token acceptable.
    if ((await lockGrant(db, grantId)) !== 'live') return 'the subject token is not active';
    const grant = await liveGrantRow(db, grantId);
    if (!grant || grant.payload.clientId !== clientId || grant.payload.accountId !== accountId) return 'the subject token is not active';
    const chain = (await grantChain(db, grantId)).map((link) => link.clientId);
    const aud = token.aud;
    return {
      clientId,
      accountId,
      grantId,
      scopes: words(token.scope),
      audience: typeof aud === 'string' ? aud : Array.isArray(aud) && typeof aud[0] === 'string' ? aud[0] : undefined,
      expiresAt: token.exp as number,
      chain,
    };
  }

  /** The client an actor_token proves; undefined when it proves nothing. */
  async function actorOf(ctx: KoaContextWithOIDC, value: string, type: string): Promise<string | undefined> {
    if (type === ACCESS_TOKEN_TYPE) {
      const token = (await activeToken(value, 'ClientCredentials')) ?? (await activeToken(value, 'AccessToken'));
      return typeof token?.clientId === 'string' ? token.clientId : undefined;
    }
    if (type !== JWT_TOKEN_TYPE || !looksLikeJwt(value)) return undefined;
    // An assertion signed with the authenticated client's registered keys, for this issuer.
    const client = ctx.oidc.client!;
    const jwks = (client.metadata() as { jwks?: { keys: JWK[] } }).jwks;
    if (!jwks) return undefined;
    try {
      const { payload } = await jwtVerify(value, createLocalJWKSet(jwks), {
        issuer: client.clientId,
        subject: client.clientId,
        audience: provider.issuer,
        algorithms: ['ES256', 'EdDSA', 'Ed25519', 'PS256'],
        maxTokenAge: MAX_ACTOR_ASSERTION_SECONDS,
      });
      if (typeof payload.jti !== 'string' || typeof payload.exp !== 'number' || payload.exp - Math.floor(Date.now() / 1000) > MAX_ACTOR_ASSERTION_SECONDS)
        return undefined;
      // Single use, like a client assertion; the marker survives the request's refusal.
      if (!(await recordOnce(db, `actor_token:${client.clientId}:${payload.jti}`, new Date(payload.exp * 1000)))) return undefined;
      return client.clientId;
    } catch {
      return undefined;
    }
  }

  async function refuse(ctx: KoaContextWithOIDC, code: RefusalCode, reason: string, subject?: SubjectToken): Promise<never> {
    await audit.record({
      type: 'token_exchange.refused',
      actor: { type: 'client', id: ctx.oidc.client?.clientId },
      clientId: ctx.oidc.client?.clientId,
      accountId: subject?.accountId ?? null,
      grantId: subject?.grantId ?? null,
      outcome: 'failure',
      details: { error: code, reason, ...(subject ? { chain: [...subject.chain, ctx.oidc.client!.clientId] } : {}) },
    });
    // A refusal is audited although the request rolls back; it wrote nothing else.
    db.mustCommit();
    throw refusalError(code, reason);
  }

  const asTarget = (rs: RegisteredServer | undefined): TargetServer | undefined =>
    rs && { identifier: rs.identifier, scopes: rs.scopes, introspectorClient: rs.introspectorClient };

  async function exchange(ctx: KoaContextWithOIDC): Promise<void> {
    const params = ctx.oidc.params as Record<string, string | undefined>;
    const client = ctx.oidc.client!;
    const subjectValue = params.subject_token;
    if (!subjectValue || !params.subject_token_type) throw new errors.InvalidRequest('subject_token and subject_token_type are required');
    if (subjectValue.length > MAX_TOKEN_LENGTH) throw new errors.InvalidRequest('subject_token is too long');
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE)
      throw new errors.InvalidRequest('only access tokens are issued (requested_token_type urn:ietf:params:oauth:token-type:access_token)');
    // RFC 8693 §2.1: actor_token_type is required with actor_token and must not come without it.
    if ((params.actor_token === undefined) !== (params.actor_token_type === undefined))
      throw new errors.InvalidRequest('actor_token and actor_token_type come together');
    const { resource, audience } = params;
    if (resource !== undefined && audience !== undefined && resource !== audience)
      throw new errors.InvalidTarget('resource and audience name different targets; name one');
    const target = resource ?? audience;
    // DPoP (RFC 9449) as for the built-in grants: a proof binds the issued token to its key, and
    // a client bound to DPoP must send one (oauth/dpop.ts says both refusals the RFC's way).
    const dPoP = await validateDpop(provider, ctx);
    if (!dPoP && (client as { dpopBoundAccessTokens?: boolean }).dpopBoundAccessTokens) throw new errors.InvalidGrant('DPoP proof JWT not provided');

    const subject = await subjectOf(subjectValue, params.subject_token_type);
    if (typeof subject === 'string') return refuse(ctx, 'invalid_request', subject);
    if (params.actor_token !== undefined) {
      const proven = params.actor_token.length > MAX_TOKEN_LENGTH ? undefined : await actorOf(ctx, params.actor_token, params.actor_token_type!);
      if (proven !== client.clientId) return refuse(ctx, 'invalid_request', 'the actor_token does not prove the authenticated client', subject);
    }

    // A connection (connected accounts): the upstream access token, from the vault.
    const connectionId = connectionOfTarget(target);
    if (connectionId !== undefined) {
      if (params.scope !== undefined) throw new errors.InvalidRequest('an upstream token carries the scopes the user granted there: leave out scope');
      try {
        ctx.body = await exchangeForConnection(deps.vault, { connectionId, actor: client.clientId, subject });
      } catch (err) {
        if (!(err instanceof AgentauthError) || !err.expose || err.status >= 500) throw err;
        await audit.record({
          type: 'token_exchange.refused',
          actor: { type: 'client', id: client.clientId },
          clientId: client.clientId,
          accountId: subject.accountId,
          grantId: subject.grantId,
          outcome: 'failure',
          details: { error: err.error, reason: err.error_description, connection: connectionId },
        });
        db.mustCommit();
        throw err;
      }
      (ctx.state as { upstreamToken?: boolean }).upstreamToken = true;
      return;
    }

    const decision = decideExchange(
      subject,
      { actor: client.clientId, actorScopes: client.scope ? words(client.scope) : undefined, scopes: params.scope ? words(params.scope) : undefined, target },
      {
        actorIsDelegate: await isDelegate(db, subject.clientId, client.clientId),
        subjectServer: asTarget(subject.audience ? await deps.findResourceServer(subject.audience) : undefined),
        targetServer: asTarget(target ? await deps.findResourceServer(target) : undefined),
      },
    );
    if (!decision.allowed) return refuse(ctx, decision.error, decision.reason, subject);

    const lifetimeLeft = subject.expiresAt - Math.floor(Date.now() / 1000);
    const account = await internals.configuration.findAccount(ctx, subject.accountId);
    if (!account || lifetimeLeft < 1) return refuse(ctx, 'invalid_request', 'the subject token is not active', subject);

    const grantId = await delegationGrant(ctx, subject, decision.scopes, decision.audience);
    const chain = [...subject.chain, client.clientId];
    const token = new provider.AccessToken({
      accountId: subject.accountId,
      client,
      grantId,
      gty: 'token_exchange',
      scope: decision.scopes.join(' '),
      expiresWithSession: false,
    } as never);
    // Kept through extraTokenClaims (src/delegation/claims.ts) into the JWT and introspection.
    token.extra = { act: actClaim(chain) };
    if (decision.audience) {
      const info = await internals.configuration.features.resourceIndicators.getResourceServerInfo(ctx, decision.audience, client);
      token.resourceServer = new ResourceServer(decision.audience, info) as never;
    }
    if (dPoP) {
      await checkDpopReplay(provider, ctx, dPoP, client.clientId, errors.InvalidGrant);
      token.setThumbprint('jkt', dPoP.thumbprint);
    }
    // Never past what the subject token has left, as an absolute exp: a lifetime counted from
    // before the awaits above could carry the token one second past the subject's when a second
    // turned over meanwhile (the provider counts it from the moment it saves).
    const now = Math.floor(Date.now() / 1000);
    const exp = Math.min(now + token.expiration, subject.expiresAt);
    const expiresIn = exp - now;
    if (expiresIn < 1) return refuse(ctx, 'invalid_request', 'the subject token is not active', subject);
    Object.assign(token, { exp, expiresIn });

    ctx.oidc.entity('Account', account as never);
    ctx.oidc.entity('Grant', (await provider.Grant.find(grantId))!);
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    (ctx.state as { tokenExchange?: ExchangeRecord }).tokenExchange = {
      chain,
      basis: decision.basis,
      subjectGrantId: subject.grantId,
      subjectTokenSha256: hashId(subjectValue).toString('hex'),
    };
    // RFC 8693 §2.2.1; no refresh token: an exchanged token is renewed by exchanging again.
    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: token.tokenType,
      expires_in: expiresIn,
      scope: token.scope,
    };
  }

  /**
   * The child grant the new token belongs to: made on the first exchange by this client from this
   * grant, its permissions growing with what later exchanges hand over. The parent's row lock is
   * held (subjectOf), so a concurrent revocation of the parent waits and then takes the child too.
   */
  async function delegationGrant(ctx: KoaContextWithOIDC, subject: SubjectToken, scopes: string[], audience: string | undefined): Promise<string> {
    const clientId = ctx.oidc.client!.clientId;
    const parent = (await liveGrantRow(db, subject.grantId))!;
    let child = await findChildGrant(db, subject.grantId, clientId);
    if (!child) {
      const now = Math.floor(Date.now() / 1000);
      const payload: Record<string, unknown> = { kind: 'Grant', accountId: subject.accountId, clientId, iat: now };
      if (typeof parent.payload.exp === 'number') payload.exp = parent.payload.exp;
      await insertChildGrant(
        db,
        { id: `dlg_${randomBytes(16).toString('base64url')}`, account_id: subject.accountId, client_id: clientId, payload, parent_grant_id: subject.grantId },
        parent.expiresAt,
      );
      child = (await findChildGrant(db, subject.grantId, clientId))!;
    }
    // A delegation the user revoked stays revoked: the same client is not handed this grant again.
    if (child.revoked || (await lockGrant(db, child.id)) !== 'live') return refuse(ctx, 'invalid_request', 'this delegation was revoked', subject);
    const row = (await liveGrantRow(db, child.id))!;
    const payload = withPermissions(row.payload, scopes, audience);
    await upsertGrant(db, { id: child.id, account_id: subject.accountId, client_id: clientId, payload }, row.expiresAt);
    return child.id;
  }

  // No parameter may repeat (one target: RFC 8693 allows several, this server issues for one).
  provider.registerGrantType(TOKEN_EXCHANGE_GRANT, exchange as never, PARAMETERS, []);
}

/** The grant payload with these scopes added, for the audience (RFC 8707) or as OIDC scopes. */
function withPermissions(payload: Record<string, unknown>, scopes: string[], audience: string | undefined): Record<string, unknown> {
  if (audience) {
    const resources = { ...((payload.resources as Record<string, string> | undefined) ?? {}) };
    resources[audience] = [...new Set([...words(resources[audience]), ...scopes])].join(' ');
    return { ...payload, resources };
  }
  const openid = (payload.openid as { scope?: string } | undefined) ?? {};
  return { ...payload, openid: { ...openid, scope: [...new Set([...words(openid.scope), ...scopes])].join(' ') } };
}
