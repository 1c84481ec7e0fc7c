/**
 * Turns what oidc-provider does into audit events. Its events fire synchronously inside the
 * request, so each event joins that request's transaction and commits (or not) with it.
 */
import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import type { RevokedGrant } from '../grants/store.ts';
import { providerRouteOf } from '../http/provider-route.ts';
import { metrics } from '../metrics/metrics.ts';
import type { AuditInput, AuditLog } from '../audit/log.ts';
import { answeredFromVault, exchangeOf } from './token-exchange.ts';

/** SHA-256 of a token value: the key it is stored under, never the value itself. */
const tokenHash = (value: unknown) => (typeof value === 'string' ? createHash('sha256').update(value).digest('hex') : undefined);

interface TokenLike {
  kind: string;
  jti: string;
  clientId?: string;
  accountId?: string;
  grantId?: string;
  scope?: string;
  resource?: string | string[];
}

const currentOidc = (): KoaContextWithOIDC['oidc'] | undefined => (Provider.ctx as KoaContextWithOIDC | undefined)?.oidc;

const asResource = (r: unknown) => (Array.isArray(r) ? r.join(' ') : typeof r === 'string' ? r : null);

export function auditProviderEvents(provider: Provider, audit: AuditLog, log: Logger, introspectionSampleRate: number): void {
  const record = (input: AuditInput) => {
    audit.record(input).catch((err: unknown) => log.error({ err, type: input.type }, 'audit record failed'));
  };

  provider.on('authorization_code.saved', (code: TokenLike) => {
    record({
      type: 'authorization_code.issued',
      actor: { type: 'user', id: code.accountId },
      clientId: code.clientId,
      accountId: code.accountId,
      grantId: code.grantId,
      scopes: code.scope,
      resource: asResource(code.resource),
    });
  });

  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    const { params, entities, client } = ctx.oidc;
    const body = ctx.body as { scope?: string; access_token?: string; refresh_token?: string };
    const grantType = String(params?.grant_type ?? '');
    if ((ctx.state as { refreshRetry?: boolean }).refreshRetry) {
      metrics.refreshRetried();
      record({
        type: 'refresh_token.retried',
        actor: { type: 'client', id: client?.clientId },
        clientId: client?.clientId,
        scopes: body.scope,
        details: { token_sha256: tokenHash(params?.refresh_token), successor_sha256: tokenHash(body.refresh_token) },
      });
      return;
    }
    const common = {
      actor: { type: 'client' as const, id: client?.clientId },
      clientId: client?.clientId,
      accountId: entities.Account?.accountId ?? null,
      grantId: entities.Grant?.jti ?? null,
      scopes: body.scope,
      resource: asResource(params?.resource),
    };
    metrics.tokenIssued(grantType);
    if (answeredFromVault(ctx)) return; // an upstream token: the vault audits it (connection.token_issued)
    // A token exchange names its whole chain, first agent first (RFC 8693 delegation).
    const exchange = exchangeOf(ctx);
    const delegation = exchange
      ? { chain: exchange.chain, basis: exchange.basis, subject_grant_id: exchange.subjectGrantId, subject_token_sha256: exchange.subjectTokenSha256 }
      : {};
    record({
      ...common,
      type: 'token.issued',
      details: {
        grant_type: grantType,
        access_token_sha256: tokenHash(body.access_token),
        refresh_token_sha256: tokenHash(body.refresh_token),
        ...delegation,
      },
    });
    if (grantType === 'refresh_token' && body.refresh_token) {
      metrics.refreshRotated();
      record({
        ...common,
        type: 'refresh_token.rotated',
        details: { previous_sha256: tokenHash(params?.refresh_token), next_sha256: tokenHash(body.refresh_token) },
      });
    }
  });

  const onRevoked = (token: TokenLike) => {
    const oidc = currentOidc();
    if (oidc?.route !== 'revocation') return;
    record({
      type: 'token.revoked',
      actor: { type: 'client', id: oidc.client?.clientId },
      clientId: token.clientId,
      accountId: token.accountId,
      grantId: token.grantId,
      scopes: token.scope,
      details: { token_type: token.kind, token_sha256: tokenHash(token.jti) },
    });
  };
  provider.on('access_token.destroyed', onRevoked);
  provider.on('refresh_token.destroyed', onRevoked);
  provider.on('client_credentials.destroyed', onRevoked);

  provider.use(async function auditIntrospection(ctx: Context, next: Next) {
    await next();
    if (providerRouteOf(ctx) !== 'introspection' || ctx.status !== 200 || Math.random() >= introspectionSampleRate) return;
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
    const body = ctx.body as { active?: boolean; client_id?: string; sub?: string; scope?: string };
    record({
      type: 'token.introspected',
      actor: { type: 'client', id: oidc?.client?.clientId },
      clientId: body.client_id,
      accountId: body.sub,
      scopes: body.scope,
      details: { active: body.active === true, sample_rate: introspectionSampleRate },
    });
  });
}

/** Audits a grant killed inside an oidc-provider request, with the reason read from the request. */
export function auditGrantRevocation(audit: AuditLog) {
  /** `reason` is oauth/revocation-reason.ts's reading of the request, the one the events carry. */
  return async (grant: RevokedGrant & { delegations?: string[] }, reason: string): Promise<void> => {
    const oidc = currentOidc();
    const actor = { type: 'client' as const, id: oidc?.client?.clientId };
    const common = { actor, clientId: grant.clientId, accountId: grant.accountId, grantId: grant.grantId };
    if (reason === 'refresh_token_reuse') {
      metrics.reuseDetected('refresh_token');
      await audit.record({
        ...common,
        type: 'refresh_token.reuse_detected',
        outcome: 'failure',
        details: { token_sha256: tokenHash(oidc?.params?.refresh_token) },
      });
    } else if (reason === 'authorization_code_reuse') {
      metrics.reuseDetected('authorization_code');
      await audit.record({ ...common, type: 'authorization_code.reuse_detected', outcome: 'failure', details: { code_sha256: tokenHash(oidc?.params?.code) } });
    }
    // The delegations that died with it (RFC 8693 token exchange), named in the same row.
    const delegations = grant.delegations?.length ? { delegations: grant.delegations } : {};
    await audit.record({ ...common, type: 'grant.revoked', details: { reason, ...delegations } });
    metrics.grantRevoked(reason);
  };
}
