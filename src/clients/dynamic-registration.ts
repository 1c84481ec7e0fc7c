/**
 * RFC 7591 registration and RFC 7592 management, on oidc-provider's endpoints (/reg, /reg/:id).
 *
 * - registrationGate: before oidc-provider sees POST /reg, require a valid initial access token,
 *   or (OPEN_REGISTRATION) nothing, in which case only public clients may register and they are
 *   marked unverified. A token's use is spent only when the registration succeeds.
 * - storeRegisteredClient / deleteRegisteredClient: the adapter's Client writes. Every create and
 *   update is checked against the registration policy as a whole, and the method a client
 *   authenticates with cannot change through RFC 7592 (register a new client instead).
 */
import type { Context, Next } from 'koa';
import Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { AuditLog } from '../audit/log.ts';
import { providerRouteOf } from '../http/provider-route.ts';
import { revokeClientAccess } from '../revocation/revoke.ts';
import type { RateLimiter, Window } from '../limits/rate-limit.ts';
import { metrics } from '../metrics/metrics.ts';
import type { Db } from '../storage/db.ts';
import { checkClientMetadata, type ClientPolicy } from './policy.ts';
import { InvalidClientMetadata, InvalidRequest } from '../errors.ts';
import { lockRegistrationToken, spendRegistrationToken } from './registration-tokens.ts';
import { storeNewClient } from './registration.ts';
import { deleteClient, findClient, updateClientMetadata, type ClientMetadata, type RegistrationKind } from './store.ts';

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;

interface RegistrationState {
  registrationKind?: RegistrationKind;
}

function refuse(ctx: Context, description: string): void {
  ctx.status = 401;
  ctx.set('WWW-Authenticate', `Bearer error="invalid_token", error_description="${description}"`);
  ctx.body = { error: 'invalid_token', error_description: description };
}

export function registrationGate(db: Db, openRegistration: boolean, limiter: RateLimiter, perIp: Window) {
  return async function gateRegistration(ctx: Context, next: Next): Promise<void> {
    if (providerRouteOf(ctx) !== 'registration' || ctx.method !== 'POST') return next();
    const verdict = await limiter.hit('registration', ctx.ip, perIp);
    if (!verdict.allowed) {
      metrics.rateLimitRefused('registration');
      ctx.status = 429;
      ctx.set('Retry-After', String(verdict.retryAfter));
      ctx.body = { error: 'too_many_requests', error_description: `too many registrations from this address; retry after ${verdict.retryAfter} s` };
      return;
    }
    const state = ctx.state as RegistrationState;
    const presented = BEARER.exec(ctx.get('authorization'))?.[1];
    if (!presented) {
      if (!openRegistration) return refuse(ctx, 'an initial access token is required to register a client');
      state.registrationKind = 'open';
      return next();
    }
    const token = await lockRegistrationToken(db, presented);
    if (!token) return refuse(ctx, 'the initial access token is unknown, expired or used up');
    state.registrationKind = 'token';
    await next();
    if (ctx.status === 201) await spendRegistrationToken(db, token);
  };
}

const currentContext = () => Provider.ctx as (KoaContextWithOIDC & { state: RegistrationState }) | undefined;

/**
 * `changed` is called when an existing client is updated or deleted (RFC 7592), inside the
 * request's transaction: instances cache active clients per configuration generation, so it
 * bumps the generation and announces it once committed.
 */
export function storeRegisteredClient(db: Db, audit: AuditLog, policy: ClientPolicy, changed: () => Promise<void>) {
  return async (clientId: string, metadata: ClientMetadata): Promise<void> => {
    const actor = { type: 'client' as const, id: clientId };
    const existing = await findClient(db, clientId);
    if (existing) {
      if (metadata.token_endpoint_auth_method !== existing.metadata.token_endpoint_auth_method) {
        throw new InvalidClientMetadata('token_endpoint_auth_method cannot change; register a new client instead');
      }
      await checkClientMetadata(db, metadata, existing.registration, policy);
      await updateClientMetadata(db, metadata);
      await changed();
      const changedKeys = Object.keys({ ...metadata, ...existing.metadata }).filter(
        (k) => JSON.stringify(metadata[k]) !== JSON.stringify(existing.metadata[k]),
      );
      await audit.record({ type: 'client.updated', actor, clientId, details: { changed: changedKeys, via: 'rfc7592', client_name: metadata.client_name } });
      return;
    }
    const kind = currentContext()?.state.registrationKind;
    if (!kind) throw new InvalidRequest('registration is not allowed here');
    await checkClientMetadata(db, metadata, kind, policy);
    // oidc-provider drew a fresh client_id: it cannot exist already.
    await storeNewClient(db, audit, metadata, kind, actor);
  };
}

export function deleteRegisteredClient(db: Db, audit: AuditLog, changed: () => Promise<void>) {
  return async (clientId: string): Promise<void> => {
    const actor = { type: 'client' as const, id: clientId };
    const revoked = await revokeClientAccess(db, audit, clientId, actor, 'client_deleted');
    const deleted = await deleteClient(db, clientId);
    await changed();
    if (deleted) await audit.record({ type: 'client.deleted', actor, clientId, details: { ...revoked, via: 'rfc7592' } });
  };
}
