/**
 * The refresh_token grant, made safe under concurrency, crashes and many instances.
 *
 * oidc-provider's own handler finds the token, checks `consumed`, consumes it and mints the
 * successor, in separate steps. We wrap it: every refresh first takes the grant's row lock and
 * the token's (one transaction per request, committed before the response), so refreshes of one
 * family run one at a time, on every instance. Then:
 * - an unused token is rotated by the built-in handler, and its row records the successor and,
 *   for the client's retry window, the successor response sealed under a key derived from the
 *   presented token, so only its holder can read it back;
 * - the immediate predecessor presented again within the window gets that same response: nothing
 *   is minted, the family does not fork (a retry after a timeout, two workers at once);
 * - any other used token is reuse: the whole grant is revoked and the answer is invalid_grant.
 * A refresh that will be refused for its resource (RFC 8707: never granted, unknown, deleted, or
 * ambiguous) is refused before the token is consumed, so the grant and the token live on.
 * DPoP (RFC 9449): the proof's key is part of the request a retry must repeat (its kept access
 * token is bound to that key), a retry's proof is checked and spent like any other, and a refresh
 * token bound to a key (a public client's) answers a retry only with that key.
 * See docs/refresh-tokens.md.
 */
import { hkdfSync } from 'node:crypto';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import { seal, unseal } from '../keys/sealed.ts';
import { rememberRotationReads } from './oidc-adapter.ts';
import { openRotation, recordSuccessor, refreshTokenIsLive, type RefreshState } from './refresh-state.ts';
import { hashId } from '../storage/hash-id.ts';
import type { Db } from '../storage/db.ts';

export interface RefreshRotationDeps {
  db: Db;
  /** Default retry window in seconds (REFRESH_RETRY_WINDOW); a client may have its own. */
  defaultRetryWindow: number;
  /** Tombstones a grant and audits why (reuse, here). */
  revokeGrant(grantId: string): Promise<void>;
}

interface TokenResponse {
  access_token?: string;
  refresh_token?: string;
  expires_in?: number;
  [key: string]: unknown;
}

/**
 * What shapes a refresh's response (RFC 8707 resource, scope, and the DPoP key its access token is
 * bound to), as one string. Without DPoP, the string responses were kept under before it.
 */
const shapingParams = (ctx: KoaContextWithOIDC, dpopKey: string | undefined): string =>
  JSON.stringify([ctx.oidc.params?.resource ?? null, ctx.oidc.params?.scope ?? null, ...(dpopKey ? [dpopKey] : [])]);

const retryKey = (presented: string) => Buffer.from(hkdfSync('sha256', presented, 'agentauth', 'refresh-retry', 32));

export function installRefreshRotation(provider: Provider, deps: RefreshRotationDeps): void {
  const found = instance(provider).grantTypeHandlers.get('refresh_token');
  if (!found) throw new Error('oidc-provider has no refresh_token handler to wrap');
  const builtIn: (ctx: KoaContextWithOIDC) => Promise<void> = found;
  const { features } = instance(provider).configuration;

  /**
   * Throws invalid_target if the built-in handler would, but before it consumes anything: it
   * resolves the resource only after rotating. Same resolution, same resource server lookup.
   */
  async function checkTarget(ctx: KoaContextWithOIDC, presented: string): Promise<void> {
    if (!features.resourceIndicators.enabled) return;
    const token = await provider.RefreshToken.find(presented, { ignoreExpiration: true });
    if (!token || token.isExpired) return; // the built-in handler answers invalid_grant
    const scope = ctx.oidc.params?.scope ? ctx.oidc.requestParamScopes : token.scopes;
    const resource = await resolveResource(ctx, token, { userinfo: features.userinfo, resourceIndicators: features.resourceIndicators }, scope);
    if (resource) await features.resourceIndicators.getResourceServerInfo(ctx, resource, ctx.oidc.client);
  }

  async function rotateOrReplay(ctx: KoaContextWithOIDC): Promise<void> {
    const presented = ctx.oidc.params?.refresh_token;
    // Anything odd (missing, unknown, another client's): the built-in handler answers it.
    if (typeof presented !== 'string' || presented.length === 0 || presented.length > 1024) return builtIn(ctx);
    // Grant row first, then the token row (the lock order of every grant write), in one trip.
    const opened = await openRotation(deps.db, presented, ctx.oidc.client?.clientId);
    if (!opened?.locked) return builtIn(ctx);
    if (opened.grantState !== 'live') throw new errors.InvalidGrant('grant is no longer valid');
    const state = opened.state;
    if (!state) throw new errors.InvalidGrant('refresh token not found');
    // What oidc-provider reads next (the token, its grant) is what was just read under the locks.
    rememberRotationReads(deps.db, presented, {
      grantId: opened.grantId,
      grantPayload: opened.grantPayload,
      token: state.payload ? { payload: state.payload, consumedAt: state.consumedAt, grantId: opened.grantId } : null,
    });

    // The proof, verified once per request (oidc-provider keeps the result for its handler).
    const dPoP = await validateDpop(provider, ctx);
    if (!state.consumed) {
      await checkTarget(ctx, presented);
      await builtIn(ctx);
      const body = ctx.body as TokenResponse;
      if (typeof body.refresh_token !== 'string') return;
      const window = state.clientRetryWindow ?? deps.defaultRetryWindow;
      const sealed =
        window > 0
          ? seal(
              retryKey(presented),
              JSON.stringify({ issuedAt: Date.now(), body, request: shapingParams(ctx, dPoP?.thumbprint) }),
              hashId(presented).toString('hex'),
            )
          : null;
      recordSuccessor(deps.db, presented, body.refresh_token, sealed, window > 0 ? new Date(Date.now() + window * 1000) : null);
      return;
    }

    await checkRetryProof(ctx, presented, dPoP);
    const replay = await sameSuccessor(state, presented, shapingParams(ctx, dPoP?.thumbprint));
    // Inside the window but asking for something else (another resource or scope): the answer
    // kept is not for this request. Not reuse either: the successor is still the live one.
    if (replay === 'another request') throw new errors.InvalidGrant('a refresh token already used can only repeat the request it was used for');
    if (replay) {
      // A retry's proof is spent like any other (the built-in handler, which would, does not run).
      await checkDpopReplay(provider, ctx, dPoP, ctx.oidc.client!.clientId, errors.InvalidGrant);
      ctx.body = replay;
      // Nothing was issued: the audit records a retry, not a new token (see provider-events).
      (ctx.state as { refreshRetry?: boolean }).refreshRetry = true;
      return;
    }
    await deps.revokeGrant(state.grantId!);
    throw new errors.InvalidGrant('refresh token already used');
  }

  /**
   * What the built-in handler checks of a proof before anything else, for a retry it will not see:
   * a client bound to DPoP sends one, and a refresh token bound to a key is answered only with it.
   * Both refusals are oidc-provider's own errors (said and audited in oauth/dpop.ts).
   */
  async function checkRetryProof(ctx: KoaContextWithOIDC, presented: string, dPoP: { thumbprint: string } | undefined): Promise<void> {
    if (!dPoP && (ctx.oidc.client as { dpopBoundAccessTokens?: boolean } | undefined)?.dpopBoundAccessTokens) {
      throw new errors.InvalidGrant('DPoP proof JWT not provided');
    }
    const token = await provider.RefreshToken.find(presented, { ignoreExpiration: true });
    const jkt = (token as { jkt?: string } | undefined)?.jkt;
    if (jkt && jkt !== dPoP?.thumbprint) throw new errors.InvalidGrant('failed jkt verification');
  }

  /** The successor response again, if this is the immediate predecessor inside its window. */
  async function sameSuccessor(state: RefreshState, presented: string, request: string): Promise<TokenResponse | 'another request' | undefined> {
    if (!state.retryResponse || !state.retryUntil || state.retryUntil.getTime() <= Date.now() || !state.successorHash) return undefined;
    // Only the immediate predecessor: its successor must still be unused.
    if (!(await refreshTokenIsLive(deps.db, state.successorHash))) return undefined;
    const kept = JSON.parse(unseal(retryKey(presented), state.retryResponse, hashId(presented).toString('hex'))) as {
      issuedAt: number;
      body: TokenResponse;
      request?: string;
    };
    // Responses sealed before the request was kept with them count as the same request.
    if (kept.request !== undefined && kept.request !== request) return 'another request';
    const { issuedAt, body } = kept;
    const elapsed = Math.floor((Date.now() - issuedAt) / 1000);
    return typeof body.expires_in === 'number' ? { ...body, expires_in: Math.max(1, body.expires_in - elapsed) } : body;
  }

  // The built-in registration's parameters: resource (RFC 8707) may repeat, as oidc-provider allows.
  provider.registerGrantType('refresh_token', rotateOrReplay as never, ['refresh_token', 'scope', 'resource'], ['resource']);
}
