/**
 * Defaults and errors for RFC 7591 registration requests that oidc-provider would otherwise
 * answer in terms of fields the client never sent.
 *
 * - Open registration admits public clients only, so an absent token_endpoint_auth_method is
 *   `none` there (RFC 7591 §2 lets the server choose the default); any other method is refused
 *   by name.
 * - Elsewhere the absent method is private_key_jwt (our clientDefaults), and the error for a
 *   missing key names the method the client left out, not only the jwks it also left out.
 *
 * Runs as part of oidc-provider's extraClientMetadata validator, which it calls on the metadata
 * (defaults applied) before its own checks, so a value set here is what those checks see.
 */
import { InvalidClientMetadata } from '../errors.ts';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { RegistrationKind } from './store.ts';

export function applyRegistrationDefaults(ctx: KoaContextWithOIDC | undefined, metadata: Record<string, unknown>): void {
  if (ctx?.oidc?.route !== 'registration') return;
  const sent = (ctx.oidc.body ?? {}) as Record<string, unknown>;
  const kind = (ctx.state as { registrationKind?: RegistrationKind }).registrationKind;
  const method = sent.token_endpoint_auth_method;
  if (kind === 'open') {
    if (method === undefined) {
      metadata.token_endpoint_auth_method = 'none';
      return;
    }
    if (method !== 'none') throw new InvalidClientMetadata('token_endpoint_auth_method must be none: self-registered clients are public clients only');
    return;
  }
  if (method === undefined && sent.jwks === undefined && sent.jwks_uri === undefined) {
    throw new InvalidClientMetadata(
      'token_endpoint_auth_method was not sent, so it is private_key_jwt, which needs jwks or jwks_uri; send one, or token_endpoint_auth_method=none for a public client',
    );
  }
}
