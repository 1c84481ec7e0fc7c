/**
 * Admin registration of clients: validates the input and builds the oidc-provider metadata.
 * Confidential clients authenticate with private_key_jwt; public ones with none (+ PKCE).
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { isPrivateHost } from '../net/private-hosts.ts';
import { findScopes } from '../scopes/store.ts';
import type { Db } from '../storage/db.ts';
import { insertClient, type ClientMetadata } from './store.ts';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;
export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials'] as const;

export class RegistrationError extends Error {
  readonly code: 'invalid_redirect_uri' | 'invalid_client_metadata';
  constructor(code: RegistrationError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

const publicJwk = z
  .object({ kty: z.enum(['EC', 'OKP', 'RSA']), kid: z.string().max(200).optional() })
  .passthrough()
  .refine((k) => !('d' in k) && !('p' in k) && !('q' in k) && !('k' in k), 'must hold public keys only (no private key parts)');

export const clientInputSchema = z.object({
  name: z.string().min(1).max(100).refine((v) => !CONTROL_CHARS.test(v), 'must not contain control characters'),
  redirectUris: z.array(z.string().max(2000)).max(20).default([]),
  jwks: z.object({ keys: z.array(publicJwk).min(1).max(10) }).optional(),
  jwksUri: z.string().max(2000).optional(),
  public: z.boolean().default(false),
  grantTypes: z.array(z.enum(GRANT_TYPES)).min(1).optional(),
  scope: z.string().max(2000).optional(),
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
});

/** Exact-match redirect URIs: https, or http on a loopback host for native apps. */
function checkRedirectUri(raw: string): { native: boolean } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RegistrationError('invalid_redirect_uri', `redirect URI ${JSON.stringify(raw)} is not an absolute URI`);
  }
  const problem = (why: string) => new RegistrationError('invalid_redirect_uri', `redirect URI ${JSON.stringify(raw)} ${why}`);
  if (url.hash || raw.includes('#')) throw problem('must not have a fragment');
  if (url.username || url.password || raw.includes('@')) throw problem('must not contain userinfo');
  if (raw.includes('*')) throw problem('must not contain wildcards');
  if (url.protocol === 'https:') return { native: false };
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return { native: true };
  throw problem('must use https, or http on a loopback address (127.0.0.1, [::1], localhost)');
}

/** What registration allows beyond the fixed rules. */
export interface ClientPolicy {
  /** ALLOW_PRIVATE_FETCH: development and tests may serve jwks_uri from loopback over http. */
  allowPrivateFetch: boolean;
}

function checkJwksUri(raw: string, policy: ClientPolicy): void {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RegistrationError('invalid_client_metadata', 'jwks_uri is not an absolute URI');
  }
  const loopbackHttp = policy.allowPrivateFetch && url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
  if ((url.protocol !== 'https:' && !loopbackHttp) || url.username || url.password || url.hash) {
    throw new RegistrationError('invalid_client_metadata', 'jwks_uri must be an https URI without userinfo or fragment');
  }
  if (!policy.allowPrivateFetch && isPrivateHost(url)) {
    throw new RegistrationError('invalid_client_metadata', 'jwks_uri must not point at a loopback, private or link-local address');
  }
}

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
  };
}

/**
 * Builds a client's metadata from registration input, checking the result as a whole: an update
 * is checked as if the resulting client were registered anew, so no sequence of partial updates
 * reaches a client that registration would refuse.
 */
export async function buildClientMetadata(db: Db, input: ClientInput, policy: ClientPolicy, clientId?: string): Promise<ClientMetadata> {
  const authChoices = [input.jwks !== undefined, input.jwksUri !== undefined, input.public].filter(Boolean).length;
  if (authChoices !== 1) {
    throw new RegistrationError('invalid_client_metadata', 'choose exactly one of --jwks-file, --jwks-uri or --public');
  }
  const natives = input.redirectUris.map(checkRedirectUri);
  if (input.jwksUri) checkJwksUri(input.jwksUri, policy);

  const grantTypes = [...new Set(input.grantTypes ?? (input.redirectUris.length ? ['authorization_code', 'refresh_token'] : ['client_credentials']))];
  if (grantTypes.includes('authorization_code') && input.redirectUris.length === 0) {
    throw new RegistrationError('invalid_redirect_uri', 'the authorization_code grant needs at least one --redirect-uri');
  }
  if (!grantTypes.includes('authorization_code') && input.redirectUris.length > 0) {
    throw new RegistrationError('invalid_client_metadata', 'redirect URIs are only for clients with the authorization_code grant');
  }
  if (input.public && grantTypes.includes('client_credentials')) {
    throw new RegistrationError('invalid_client_metadata', 'a public client cannot use the client_credentials grant');
  }
  if (grantTypes.includes('refresh_token') && !grantTypes.includes('authorization_code')) {
    throw new RegistrationError('invalid_client_metadata', 'the refresh_token grant comes with authorization_code');
  }

  const scopes = input.scope ? [...new Set(input.scope.split(' ').filter(Boolean))] : [];
  const known = new Set((await findScopes(db, scopes)).map((s) => s.name));
  const unknown = scopes.filter((s) => s !== 'openid' && !known.has(s));
  if (unknown.length) throw new RegistrationError('invalid_client_metadata', `unknown scope ${unknown.join(', ')}: create it first with "agentauth scopes create"`);

  const metadata: ClientMetadata = {
    client_id: clientId ?? `agt_${randomBytes(16).toString('base64url')}`,
    client_name: input.name,
    application_type: natives.length > 0 && natives.every((n) => n.native) ? 'native' : 'web',
    redirect_uris: input.redirectUris,
    grant_types: grantTypes,
    response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
    token_endpoint_auth_method: input.public ? 'none' : 'private_key_jwt',
    ...(input.jwks ? { jwks: input.jwks } : {}),
    ...(input.jwksUri ? { jwks_uri: input.jwksUri } : {}),
    ...(scopes.length ? { scope: scopes.join(' ') } : {}),
  };
  return metadata;
}

export async function registerClient(db: Db, input: ClientInput, policy: ClientPolicy): Promise<ClientMetadata> {
  const metadata = await buildClientMetadata(db, input, policy);
  await insertClient(db, metadata);
  return metadata;
}
