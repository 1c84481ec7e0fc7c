/**
 * Client authentication failures that explain themselves (to the developer, the log and the
 * audit trail) without helping anyone guess keys.
 *
 * oidc-provider answers every invalid_client with "client authentication failed" and keeps the
 * reason in `error_detail`. Here, from its error events (fired after the body is set, before it is
 * sent, inside the request's unit of work):
 * - a rule about the assertion's shape (alg, typ, exp/iat/nbf, jti, iss, sub, aud, crit, lifetime)
 *   becomes the error_description: the caller sent that JWT, so telling it which claim is wrong
 *   gives nothing away; a signature, key or unknown-client failure stays "client authentication
 *   failed" (those answers would be an oracle);
 * - every failure is logged at info and audited as client.authentication_failed with the rule;
 *   the audit row survives the refusal (db.mustCommit);
 * - Basic credentials with an empty password, which oidc-provider calls invalid_request (400),
 *   are a failed client authentication by the Authorization header: RFC 6749 §5.2 says 401
 *   invalid_client with WWW-Authenticate.
 */
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.ts';
import type { Db } from '../storage/db.ts';

export interface AuthenticationFailureDeps {
  db: Db;
  audit: AuditLog;
  log: Logger;
}

interface ProviderError {
  error?: string;
  error_detail?: string;
  statusCode?: number;
}

interface ErrorBody {
  error?: unknown;
  error_description?: unknown;
}

/** A rule of the assertion's shape, matched on oidc-provider's (and our) error detail. */
interface ShapeRule {
  rule: string;
  match: RegExp;
  /** What the developer is told; undefined: the detail itself, already written for them. */
  say?: (issuer: string) => string;
}

const AUD = (issuer: string) => `aud must be the issuer identifier (${issuer}), as a single string`;

const SHAPE_RULES: ShapeRule[] = [
  {
    rule: 'alg',
    match: /^alg mismatch$/,
    say: () => "alg: the client assertion must be signed with an algorithm in the metadata's token_endpoint_auth_signing_alg_values_supported",
  },
  { rule: 'exp', match: /^expiration must be specified/, say: () => 'exp is required in the client assertion' },
  { rule: 'exp', match: /^(jwt expired|invalid exp value)$/, say: () => 'exp: the client assertion has expired, or exp is not a number' },
  {
    rule: 'iat',
    match: /^(jwt issued in the future|invalid iat value)$/,
    say: () => 'iat: the client assertion was issued in the future, or iat is not a number',
  },
  { rule: 'nbf', match: /^(jwt not active yet|invalid nbf value)$/, say: () => 'nbf: the client assertion is not valid yet, or nbf is not a number' },
  { rule: 'jti', match: /^unique jti/, say: () => 'jti is required in the client assertion' },
  {
    rule: 'jti',
    match: /^client assertion tokens must only be used once$/,
    say: () => 'jti: this client assertion was already used; make a new one, with a new jti, for every request',
  },
  { rule: 'iss', match: /^iss \(JWT issuer\)/, say: () => 'iss must be the client_id' },
  { rule: 'sub', match: /^sub \(JWT subject\)/, say: () => 'sub must be the client_id' },
  { rule: 'aud', match: /^(aud \(JWT audience\)|list of audience|audience \(aud\))/, say: AUD },
  // Our own checks (oauth/provider.ts), whose messages are written for the developer already.
  { rule: 'aud', match: /^aud must be the issuer/, say: AUD },
  { rule: 'sub', match: /^sub must be the client_id$/ },
  { rule: 'jti', match: /^jti must be a string/ },
  { rule: 'crit', match: /^crit header parameters/ },
  { rule: 'typ', match: /^typ must be/ },
  { rule: 'iat', match: /^iat is in the future$/ },
  { rule: 'lifetime', match: /^the client assertion may be valid for at most/ },
  {
    rule: 'method',
    match: /^the provided authentication mechanism does not match/,
    say: () => 'this client is registered for another authentication method (private_key_jwt or none)',
  },
];

/** The rule an invalid_client broke, and what may be said about it. */
export function explainClientAuthFailure(detail: string, issuer: string): { rule: string; description?: string } {
  const found = SHAPE_RULES.find((r) => r.match.test(detail));
  if (found) return { rule: found.rule, description: found.say ? found.say(issuer) : detail };
  if (detail === 'client not found') return { rule: 'unknown_client' };
  // Signature and key failures (no matching key, bad signature, undecodable JWT): never explained.
  return { rule: 'credentials' };
}

const EMPTY_BASIC_PASSWORD = 'client_secret must be provided in the Authorization header';

export function explainClientAuthFailures(provider: Provider, deps: AuthenticationFailureDeps): void {
  const onError = (ctx: KoaContextWithOIDC, err: ProviderError) => {
    const body = ctx.body as ErrorBody | undefined;
    const json = body !== null && typeof body === 'object' && !Buffer.isBuffer(body);
    let rule: string;
    if (err.error === 'invalid_request' && err.error_detail === undefined && json && body.error_description === EMPTY_BASIC_PASSWORD) {
      rule = 'basic_empty_password';
      ctx.status = 401;
      ctx.set('WWW-Authenticate', `Basic realm="${provider.issuer}", error="invalid_client"`);
      ctx.body = {
        error: 'invalid_client',
        error_description: 'client secrets are not offered: authenticate with private_key_jwt, or as a public client with client_id alone',
      };
    } else if (err.error === 'invalid_client') {
      const explained = explainClientAuthFailure(String(err.error_detail ?? ''), provider.issuer);
      rule = explained.rule;
      if (explained.description && json && body.error === 'invalid_client') body.error_description = explained.description;
    } else {
      return;
    }
    record(ctx, rule, String(err.error_detail ?? rule));
  };

  function record(ctx: KoaContextWithOIDC, rule: string, detail: string): void {
    const clientId = ctx.oidc.client?.clientId ?? null;
    const claimed = typeof ctx.oidc.params?.client_id === 'string' ? ctx.oidc.params.client_id.slice(0, 200) : undefined;
    const endpoint = ctx.oidc.route;
    deps.log.info({ client_id: clientId ?? claimed, endpoint, rule, detail }, 'client authentication failed');
    // The refusal rolls its request back; its audit row must not go with it.
    deps.db.mustCommit();
    deps.audit
      .record({
        type: 'client.authentication_failed',
        actor: { type: 'client', id: clientId },
        clientId,
        outcome: 'failure',
        details: { endpoint, rule, detail: detail.slice(0, 300), ...(clientId ? {} : { claimed_client_id: claimed }) },
      })
      .catch((error: unknown) => deps.log.error({ err: error }, 'audit record failed'));
  }

  // The endpoints that authenticate clients (the token endpoint's event is grant.error).
  provider.on('grant.error', onError);
  provider.on('introspection.error', onError);
  provider.on('revocation.error', onError);
}
