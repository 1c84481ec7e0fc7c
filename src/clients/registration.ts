/**
 * Registration of clients. `storeNewClient` is the one way a client comes to exist, whoever
 * registers it (an admin, RFC 7591, a metadata document's first use): one insert, one
 * `client.registered` audit shape; the paths differ only in how they authenticate and which policy
 * they apply. The rest validates an admin's input and builds the oidc-provider metadata.
 * Confidential clients authenticate with private_key_jwt; public ones with none (+ PKCE).
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { AuditInput, AuditLog } from '../audit/log.ts';
import type { Db } from '../storage/db.ts';
import { checkClientMetadata, checkClientName, checkRedirectUri, GRANT_TYPES, NAME_MAX_LENGTH, type ClientPolicy } from './policy.ts';
import { InvalidClientMetadata } from '../errors.ts';
import { insertClientIfAbsent, setRefreshRetryWindow, setTokenRateLimit, type ClientMetadata, type RegistrationKind } from './store.ts';

export type { ClientPolicy } from './policy.ts';

const publicJwk = z
  .object({ kty: z.enum(['EC', 'OKP', 'RSA']), kid: z.string().max(200).optional() })
  .passthrough()
  .refine((k) => !('d' in k) && !('p' in k) && !('q' in k) && !('k' in k), 'must hold public keys only (no private key parts)');

export const clientInputSchema = z.object({
  name: z
    .string()
    .min(1)
    .max(NAME_MAX_LENGTH)
    .refine((v) => {
      try {
        checkClientName(v);
        return true;
      } catch {
        return false;
      }
    }, 'must not contain control characters'),
  redirectUris: z.array(z.string().max(2000)).max(20).default([]),
  jwks: z.object({ keys: z.array(publicJwk).min(1).max(10) }).optional(),
  jwksUri: z.string().max(2000).optional(),
  public: z.boolean().default(false),
  grantTypes: z.array(z.enum(GRANT_TYPES)).min(1).optional(),
  scope: z.string().max(2000).optional(),
  /** Token endpoint requests per minute for this client; null or absent: TOKEN_RATE_LIMIT. */
  tokenRateLimit: z.number().int().min(1).max(1_000_000).nullable().optional(),
  /** Where revocation events are pushed (RFC 8935), if the agent wants them. */
  eventUri: z.string().max(2000).optional(),
  /** Where OIDC back-channel logout tokens are sent when a grant is revoked. */
  backchannelLogoutUri: z.string().max(2000).optional(),
  /** Seconds the previous refresh token still gets the same successor; 0 strict; null default. */
  refreshRetryWindow: z.number().int().min(0).max(300).nullable().optional(),
  /** RFC 9449 §5.2: every token request of this client must carry a DPoP proof. */
  dpopBoundAccessTokens: z.boolean().optional(),
});
export type ClientInput = z.infer<typeof clientInputSchema>;

/** An update names the client and only what changes; the result is checked as a whole. */
export const clientUpdateSchema = z.object({
  clientId: z.string().min(1).max(200),
  name: clientInputSchema.shape.name.optional(),
  redirectUris: z.array(z.string().max(2000)).max(20).optional(),
  jwks: clientInputSchema.shape.jwks,
  jwksUri: clientInputSchema.shape.jwksUri,
  public: z.literal(true).optional(),
  grantTypes: clientInputSchema.shape.grantTypes,
  scope: clientInputSchema.shape.scope,
  tokenRateLimit: clientInputSchema.shape.tokenRateLimit,
  eventUri: clientInputSchema.shape.eventUri,
  backchannelLogoutUri: clientInputSchema.shape.backchannelLogoutUri,
  refreshRetryWindow: clientInputSchema.shape.refreshRetryWindow,
  dpopBoundAccessTokens: clientInputSchema.shape.dpopBoundAccessTokens,
  /** The clients this one may hand its users' tokens to (RFC 8693), replacing the current list. */
  delegates: z.array(z.string().min(1).max(200)).max(20).optional(),
});

/** The input that would register this client as it is: the base for an update. */
export function inputOf(metadata: ClientMetadata): ClientInput {
  const jwks = metadata.jwks as ClientInput['jwks'];
  return {
    name: String(metadata.client_name ?? metadata.client_id),
    redirectUris: (metadata.redirect_uris as string[] | undefined) ?? [],
    jwks,
    jwksUri: metadata.jwks_uri as string | undefined,
    public: metadata.token_endpoint_auth_method === 'none',
    grantTypes: metadata.grant_types as ClientInput['grantTypes'],
    scope: metadata.scope as string | undefined,
    eventUri: metadata.event_delivery_uri as string | undefined,
    backchannelLogoutUri: metadata.backchannel_logout_uri as string | undefined,
    dpopBoundAccessTokens: metadata.dpop_bound_access_tokens === true,
  };
}

/**
 * Builds a client's metadata from registration input, checking the result as a whole: an update
 * is checked as if the resulting client were registered anew, so no sequence of partial updates
 * reaches a client that registration would refuse.
 */
/** For an update: the client as it is, whose other metadata (logo, URIs…) and kind carry over. */
export interface ExistingClient {
  metadata: ClientMetadata;
  registration: RegistrationKind;
}

export async function buildClientMetadata(db: Db, input: ClientInput, policy: ClientPolicy, existing?: ExistingClient): Promise<ClientMetadata> {
  const authChoices = [input.jwks !== undefined, input.jwksUri !== undefined, input.public].filter(Boolean).length;
  if (authChoices !== 1) {
    throw new InvalidClientMetadata('choose exactly one of --jwks-file, --jwks-uri or --public');
  }
  const loopbacks = input.redirectUris.map((uri) => checkRedirectUri(uri).loopback);
  const grantTypes = [...new Set(input.grantTypes ?? (input.redirectUris.length ? ['authorization_code', 'refresh_token'] : ['client_credentials']))];
  const scopes = input.scope ? [...new Set(input.scope.split(' ').filter(Boolean))] : [];
  // Carried over: what the CLI does not manage (logo, URIs…); the rest is rebuilt from the input.
  const {
    jwks: _jwks,
    jwks_uri: _jwksUri,
    scope: _scope,
    event_delivery_uri: currentEventUri,
    backchannel_logout_uri: currentLogoutUri,
    dpop_bound_access_tokens: currentDpop,
    ...carried
  }: Record<string, unknown> = existing?.metadata ?? {};
  const eventUri = input.eventUri ?? (typeof currentEventUri === 'string' ? currentEventUri : undefined);
  const logoutUri = input.backchannelLogoutUri ?? (typeof currentLogoutUri === 'string' ? currentLogoutUri : undefined);
  const dpopBound = input.dpopBoundAccessTokens ?? currentDpop === true;
  const metadata: ClientMetadata = {
    ...carried,
    client_id: existing?.metadata.client_id ?? `agt_${randomBytes(16).toString('base64url')}`,
    client_name: input.name,
    // Only loopback redirect URIs make a native app (whose port may vary, RFC 8252 §7.3).
    application_type: loopbacks.length > 0 && loopbacks.every(Boolean) ? 'native' : 'web',
    redirect_uris: input.redirectUris,
    grant_types: grantTypes,
    response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
    token_endpoint_auth_method: input.public ? 'none' : 'private_key_jwt',
    ...(input.jwks ? { jwks: input.jwks } : {}),
    ...(input.jwksUri ? { jwks_uri: input.jwksUri } : {}),
    ...(scopes.length ? { scope: scopes.join(' ') } : {}),
    ...(eventUri ? { event_delivery_uri: eventUri } : {}),
    ...(logoutUri ? { backchannel_logout_uri: logoutUri } : {}),
    ...(dpopBound ? { dpop_bound_access_tokens: true } : {}),
  };
  await checkClientMetadata(db, metadata, existing?.registration ?? 'admin', policy);
  return metadata;
}

/**
 * Stores a new client and audits its registration; false (nothing written) when a client with its
 * id exists already, e.g. a concurrent first use of the same metadata document.
 */
export async function storeNewClient(
  db: Db,
  audit: AuditLog,
  metadata: ClientMetadata,
  registration: RegistrationKind,
  actor: AuditInput['actor'],
): Promise<boolean> {
  if (!(await insertClientIfAbsent(db, metadata, registration))) return false;
  await audit.record({
    type: 'client.registered',
    actor,
    clientId: metadata.client_id,
    scopes: typeof metadata.scope === 'string' ? metadata.scope : null,
    details: {
      registration,
      client_name: metadata.client_name,
      grant_types: metadata.grant_types,
      redirect_uris: metadata.redirect_uris,
      token_endpoint_auth_method: metadata.token_endpoint_auth_method,
    },
  });
  return true;
}

/** An admin's registration (CLI or admin API): the input checked as a whole, then stored. */
export async function registerClient(db: Db, audit: AuditLog, input: ClientInput, policy: ClientPolicy, actor: AuditInput['actor']): Promise<ClientMetadata> {
  const metadata = await buildClientMetadata(db, input, policy);
  // A fresh random client_id: it cannot exist already.
  await storeNewClient(db, audit, metadata, 'admin', actor);
  if (input.tokenRateLimit) await setTokenRateLimit(db, metadata.client_id, input.tokenRateLimit);
  if (input.refreshRetryWindow !== undefined && input.refreshRetryWindow !== null)
    await setRefreshRetryWindow(db, metadata.client_id, input.refreshRetryWindow);
  return metadata;
}
