/**
 * Why oidc-provider is killing a grant, read from the request it does it in: the reason the
 * revocation events carry, the same one its grant.revoked audit row gives
 * (provider-events.ts, auditGrantRevocation), so a subscriber learns the cause.
 */
import Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

export function revocationReasonFromRequest(): string {
  const oidc = (Provider.ctx as KoaContextWithOIDC | undefined)?.oidc;
  const grantType = oidc?.params?.grant_type;
  if (oidc?.route === 'token' && grantType === 'refresh_token') return 'refresh_token_reuse';
  if (oidc?.route === 'token' && grantType === 'authorization_code') return 'authorization_code_reuse';
  if (oidc?.route === 'revocation') return 'token_revoked';
  return oidc?.route ?? 'grant_revoked';
}
