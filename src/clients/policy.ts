/**
 * The registration policy: one check of a client's *resulting* metadata, whoever registers or
 * changes it (the admin CLI, RFC 7591 registration, RFC 7592 updates). Checking the result as a
 * whole, not the fields a request touched, is what stops partial updates reaching a client that
 * registration would refuse (Keycloak CVE-2026-18573 and kin).
 */
import { InvalidClientMetadata, InvalidRedirectUri } from '../errors.ts';
import { ipLiteral, addressKind } from '../net/addresses.ts';
import type { Outbound } from '../net/outbound.ts';
import { findScopes } from '../scopes/store.ts';
import type { Db } from '../storage/db.ts';
import { isSelfRegistered, type ClientMetadata, type RegistrationKind } from './store.ts';

export const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;
/** The token exchange grant (RFC 8693): for agents an operator names as delegates, and resource servers. */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials', TOKEN_EXCHANGE_GRANT] as const;
export const NAME_MAX_LENGTH = 100;
const DISPLAY_URI_FIELDS = ['logo_uri', 'client_uri', 'policy_uri', 'tos_uri'] as const;

type RegistrationCode = 'invalid_redirect_uri' | 'invalid_client_metadata';

/** A refusal in the RFC 7591 §3.2.2 code it is, whichever path registers the client. */
export function registrationError(code: RegistrationCode, message: string): InvalidRedirectUri | InvalidClientMetadata {
  return code === 'invalid_redirect_uri' ? new InvalidRedirectUri(message) : new InvalidClientMetadata(message);
}

/** What registration allows beyond the fixed rules. */
export interface ClientPolicy {
  /** The rules for every URL agentauth itself calls (jwks_uri, event_delivery_uri). */
  outbound: Outbound;
  /** Client assertion algorithms the server accepts. */
  signingAlgs: readonly string[];
}

export type { RegistrationKind } from './store.ts';

const metadataError = (field: string, why: string) => registrationError('invalid_client_metadata', `${field} ${why}`);

function parseUrl(raw: unknown, field: string, code: RegistrationCode): URL {
  if (typeof raw !== 'string') throw registrationError(code, `${field} must be a string`);
  try {
    return new URL(raw);
  } catch {
    throw registrationError(code, `${field} ${JSON.stringify(raw)} is not an absolute URI`);
  }
}

/** Exact-match redirect URIs: https, or http on a loopback host (native apps only). */
export function checkRedirectUri(raw: string): { loopback: boolean } {
  const url = parseUrl(raw, 'redirect URI', 'invalid_redirect_uri');
  const problem = (why: string) => registrationError('invalid_redirect_uri', `redirect URI ${JSON.stringify(raw)} ${why}`);
  if (url.hash || raw.includes('#')) throw problem('must not have a fragment');
  if (url.username || url.password || raw.includes('@')) throw problem('must not contain userinfo');
  if (raw.includes('*')) throw problem('must not contain wildcards');
  if (url.protocol === 'https:') return { loopback: false };
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return { loopback: true };
  throw problem('must use https, or http on a loopback address (127.0.0.1, [::1], localhost)');
}

/**
 * An https URL without userinfo or fragment, never dialled by agentauth. With `loopbackHttp`,
 * http on a loopback host too: a resource identifier is only an audience name, and MCP servers
 * running on the user's machine are named http://localhost:PORT/… (RFC 8707 asks only for an
 * absolute URI).
 */
export function checkHttpsUrl(raw: unknown, field: string, options: { loopbackHttp?: boolean } = {}): URL {
  const url = parseUrl(raw, field, 'invalid_client_metadata');
  const loopbackHttp = options.loopbackHttp === true && url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
  if ((url.protocol !== 'https:' && !loopbackHttp) || url.username || url.password || url.hash) {
    throw metadataError(field, `must be an https URI${options.loopbackHttp ? ' (or http on a loopback host)' : ''} without userinfo or fragment`);
  }
  return url;
}

/**
 * A URL agentauth itself fetches or posts to (jwks_uri, event_delivery_uri): the outbound
 * module's rules, checked at registration so a client learns now, not at the first fetch.
 */
export function checkFetchedUri(raw: unknown, field: string, policy: ClientPolicy): void {
  const url = parseUrl(raw, field, 'invalid_client_metadata');
  if (url.hash) throw metadataError(field, 'must not have a fragment');
  const refused = policy.outbound.urlRefusal(url);
  if (refused) throw metadataError(field, `cannot be called: ${refused}`);
}

export const checkJwksUri = (raw: unknown, policy: ClientPolicy) => checkFetchedUri(raw, 'jwks_uri', policy);

/** Whether a URL names a loopback, private, link-local or other special-use host. */
function namesNonPublicHost(url: URL): boolean {
  const host = url.hostname.replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  const literal = ipLiteral(host);
  return literal !== undefined && addressKind(literal.address) !== 'public';
}

/** URIs shown to users (logo, home page, policies): https, no userinfo, never a private host. */
function checkDisplayUri(raw: unknown, field: string): void {
  const url = parseUrl(raw, field, 'invalid_client_metadata');
  if (url.protocol !== 'https:' || url.username || url.password) throw metadataError(field, 'must be an https URI without userinfo');
  if (namesNonPublicHost(url)) throw metadataError(field, 'must not point at a loopback, private or link-local address');
}

export function checkClientName(name: unknown): void {
  if (name === undefined) return;
  if (typeof name !== 'string' || name.length === 0 || name.length > NAME_MAX_LENGTH)
    throw metadataError('client_name', `must be 1 to ${NAME_MAX_LENGTH} characters`);
  if (CONTROL_CHARS.test(name)) throw metadataError('client_name', 'must not contain control characters');
}

const stringList = (value: unknown, field: string): string[] => {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw metadataError(field, 'must be an array of strings');
  return value as string[];
};

/** Checks a client's resulting metadata as a whole; throws InvalidClientMetadata or InvalidRedirectUri naming the field. */
export async function checkClientMetadata(db: Db, m: ClientMetadata, kind: RegistrationKind, policy: ClientPolicy): Promise<void> {
  checkClientName(m.client_name);

  const method = m.token_endpoint_auth_method;
  if (method !== 'private_key_jwt' && method !== 'none')
    throw metadataError('token_endpoint_auth_method', 'must be private_key_jwt (or none for public clients); client secrets are not offered');
  if (isSelfRegistered(kind) && method !== 'none')
    throw metadataError('token_endpoint_auth_method', 'must be none: self-registered clients are public clients only');

  const grantTypes = stringList(m.grant_types, 'grant_types');
  const allowedGrants: readonly string[] = isSelfRegistered(kind) ? ['authorization_code', 'refresh_token'] : GRANT_TYPES;
  const offGrant = grantTypes.find((g) => !allowedGrants.includes(g));
  if (offGrant) throw metadataError('grant_types', `may not include ${offGrant}`);
  if (grantTypes.length === 0) throw metadataError('grant_types', 'must not be empty');
  if (method === 'none' && grantTypes.includes('client_credentials'))
    throw metadataError('grant_types', 'a public client cannot use the client_credentials grant');
  if (grantTypes.includes('refresh_token') && !grantTypes.includes('authorization_code'))
    throw metadataError('grant_types', 'refresh_token comes with authorization_code');

  const responseTypes = stringList(m.response_types, 'response_types');
  const expectedResponseTypes = grantTypes.includes('authorization_code') ? ['code'] : [];
  if (responseTypes.join(' ') !== expectedResponseTypes.join(' ')) throw metadataError('response_types', `must be ${JSON.stringify(expectedResponseTypes)}`);

  const redirectUris = stringList(m.redirect_uris, 'redirect_uris');
  const loopbacks = redirectUris.map((uri) => checkRedirectUri(uri).loopback);
  if (grantTypes.includes('authorization_code') && redirectUris.length === 0)
    throw registrationError('invalid_redirect_uri', 'the authorization_code grant needs at least one redirect URI');
  if (!grantTypes.includes('authorization_code') && redirectUris.length > 0)
    throw metadataError('redirect_uris', 'are only for clients with the authorization_code grant');
  if (m.application_type !== 'native' && loopbacks.some(Boolean))
    throw registrationError('invalid_redirect_uri', 'http loopback redirect URIs are for native clients only');

  const hasJwks = m.jwks !== undefined;
  const hasJwksUri = m.jwks_uri !== undefined;
  if (method === 'private_key_jwt' && hasJwks === hasJwksUri) throw metadataError('jwks', 'exactly one of jwks or jwks_uri is required for private_key_jwt');
  if (method === 'none' && (hasJwks || hasJwksUri)) throw metadataError('jwks', 'is not used by public clients');
  if (hasJwksUri) checkJwksUri(m.jwks_uri, policy);
  if (m.token_endpoint_auth_signing_alg !== undefined && !policy.signingAlgs.includes(String(m.token_endpoint_auth_signing_alg))) {
    throw metadataError('token_endpoint_auth_signing_alg', `must be one of ${policy.signingAlgs.join(', ')}`);
  }

  if (m.dpop_bound_access_tokens !== undefined && typeof m.dpop_bound_access_tokens !== 'boolean')
    throw metadataError('dpop_bound_access_tokens', 'must be a boolean');

  for (const field of DISPLAY_URI_FIELDS) if (m[field] !== undefined) checkDisplayUri(m[field], field);
  if (m.event_delivery_uri !== undefined) checkFetchedUri(m.event_delivery_uri, 'event_delivery_uri', policy);
  if (m.backchannel_logout_uri !== undefined) checkFetchedUri(m.backchannel_logout_uri, 'backchannel_logout_uri', policy);

  if (m.scope !== undefined) {
    if (typeof m.scope !== 'string') throw metadataError('scope', 'must be a string');
    const scopes = [...new Set(m.scope.split(' ').filter(Boolean))];
    const found = await findScopes(db, scopes);
    const known = new Set(found.map((s) => s.name));
    const unknown = scopes.filter((s) => s !== 'openid' && !known.has(s));
    if (unknown.length) throw metadataError('scope', `names unknown scope ${unknown.join(', ')}: create it first with "agentauth scopes create"`);
    // Anyone can self-register under any name: only scopes opened to unverified clients.
    const closed = isSelfRegistered(kind) ? found.filter((s) => !s.allowUnverified).map((s) => s.name) : [];
    if (closed.length) throw metadataError('scope', `names ${closed.join(', ')}, which self-registered clients may not request`);
  }
}
