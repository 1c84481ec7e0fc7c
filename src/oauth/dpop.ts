/**
 * DPoP (RFC 9449) at the authorization server: oidc-provider verifies proofs and binds tokens
 * (`features.dPoP`); what is ours is the policy around it.
 * - Nonces (§8) come from secrets every instance shares (DPOP_NONCE_SECRETS, or one derived from
 *   the key-encryption key): the first makes new nonces, all are accepted, as cookie keys rotate.
 * - Proof `jti`s are single-use through the adapter's ReplayDetection (PostgreSQL), the rule of
 *   client assertions: no Redis flush or restart reopens a window.
 * - A client that must use DPoP (dpop_bound_access_tokens, §5.2, or any public client when the
 *   deployment says so) and sends no proof is answered `invalid_dpop_proof`; a replayed proof too.
 * - A bound refresh token (public clients, §5) presented with another key, or none, is refused
 *   with invalid_grant and audited as refresh_token.key_mismatch.
 * See docs/dpop.md.
 */
import { createHash, hkdfSync } from 'node:crypto';
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import ServerChallenge from 'oidc-provider/lib/helpers/challenge.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.ts';
import type { Db } from '../storage/db.ts';

/** Algorithms a DPoP proof may be signed with (Ed25519 is EdDSA's fully-specified name, RFC 9864). */
export const DPOP_ALGS = ['ES256', 'EdDSA', 'Ed25519', 'PS256'] as const;

/**
 * How long oidc-provider keeps a proof's jti (its CHALLENGE_OK_WINDOW): the iat window without a
 * nonce, and longer than a nonce stays good.
 */
export const DPOP_PROOF_WINDOW_SECONDS = 300;

export interface DpopSettings {
  /** The first makes nonces; every one is accepted. Each 32 bytes. */
  nonceSecrets: Buffer[];
  requireNonce: boolean;
  requiredForPublicClients: boolean;
}

/** DPOP_NONCE_SECRETS, or one secret derived from the key-encryption key (the same on every instance). */
export function dpopNonceSecrets(configured: Buffer[] | undefined, keyEncryptionKey: Buffer): Buffer[] {
  if (configured?.length) return configured;
  return [Buffer.from(hkdfSync('sha256', keyEncryptionKey, 'agentauth', 'dpop-nonce', 32))];
}

type DpopFeature = NonNullable<NonNullable<Configuration['features']>['dPoP']>;

export function dpopFeature(s: DpopSettings): DpopFeature {
  return {
    enabled: true,
    // Shared by every instance, so a nonce one instance gave is good at any other.
    nonceSecret: s.nonceSecrets[0]!,
    // DPOP_REQUIRE_NONCE: every proof carries a nonce (§8); otherwise a proof whose iat is
    // outside the 300 s window is still answered use_dpop_nonce, with a fresh one.
    requireNonce: () => s.requireNonce,
    // Replays are refused: jti markers through the adapter (PostgreSQL, atomic).
    allowReplay: false,
  };
}

/**
 * Nonces that outlive a rotation: new ones from the first secret, old ones still accepted for
 * their window. oidc-provider holds one secret; this replaces its checker after construction.
 */
export function installNonceRotation(provider: Provider, secrets: Buffer[]): void {
  if (secrets.length < 2) return;
  const challenges = secrets.map((secret) => new ServerChallenge(secret, 'DPoP'));
  const internals = instance(provider) as unknown as { DPoPNonces: unknown };
  internals.DPoPNonces = {
    nextChallenge: () => challenges[0]!.nextChallenge(),
    checkChallenge: (nonce: string) => challenges.some((c) => c.checkChallenge(nonce)),
  };
}

/**
 * DPOP_REQUIRED_FOR_PUBLIC_CLIENTS: a public client is held to dpop_bound_access_tokens whenever
 * it is read, without that being written to its registration (turning the switch off frees it).
 * Runs inside oidc-provider's client metadata validator; agentauth's own account page is exempt.
 */
export function requireDpopOfPublicClient(metadata: Record<string, unknown>, exempt: string, registering: boolean): void {
  if (registering || metadata.token_endpoint_auth_method !== 'none' || metadata.client_id === exempt) return;
  metadata.dpop_bound_access_tokens = true;
}

interface ProviderError {
  error?: string;
  error_detail?: string;
}

const sha256 = (value: unknown) => (typeof value === 'string' ? createHash('sha256').update(value).digest('hex') : undefined);

/** oidc-provider's details for these refusals, and what the client is told. */
const MISSING_PROOF = 'DPoP proof JWT not provided';
const REPLAYED_PROOF = 'DPoP proof JWT Replay detected';
const KEY_MISMATCH = 'failed jkt verification';
/** invalid_grant refusals about the code's dpop_jkt (§10), said plainly (oidc-provider says only "grant request is invalid"). */
const CODE_BINDING: Record<string, string> = {
  'missing DPoP proof JWT': 'this authorization code is bound to a DPoP key (dpop_jkt): send a proof signed with it',
  'DPoP proof key thumbprint does not match dpop_jkt': 'the DPoP proof is signed with another key than the dpop_jkt this authorization code is bound to',
};

export interface DpopFailureDeps {
  db: Db;
  audit: AuditLog;
  log: Logger;
}

/**
 * Token endpoint refusals said the RFC's way. oidc-provider calls both a missing proof and a
 * replayed one invalid_grant; RFC 9449 §5.2 and §11.1 make them a proof problem:
 * invalid_dpop_proof, with the reason.
 */
export function explainDpopFailures(provider: Provider, deps: DpopFailureDeps): void {
  provider.on('grant.error', (ctx: KoaContextWithOIDC, err: ProviderError) => {
    if (err.error !== 'invalid_grant') return;
    const body = ctx.body as Record<string, unknown> | undefined;
    if (!body || typeof body !== 'object') return;
    if (err.error_detail === MISSING_PROOF) {
      ctx.body = { error: 'invalid_dpop_proof', error_description: 'this client must send a DPoP proof with every token request (dpop_bound_access_tokens)' };
    } else if (err.error_detail === REPLAYED_PROOF) {
      ctx.body = { error: 'invalid_dpop_proof', error_description: 'this DPoP proof was already used: make a new one, with a new jti, for every request' };
    } else if (err.error_detail !== undefined && CODE_BINDING[err.error_detail]) {
      body.error_description = CODE_BINDING[err.error_detail];
    } else if (err.error_detail === KEY_MISMATCH) {
      body.error_description = 'this refresh token is bound to another DPoP key: send a proof signed with the key it was issued to';
      recordKeyMismatch(ctx);
    }
  });

  function recordKeyMismatch(ctx: KoaContextWithOIDC): void {
    const clientId = ctx.oidc.client?.clientId ?? null;
    deps.log.warn({ client_id: clientId }, 'bound refresh token presented with another DPoP key');
    // The refusal rolls its request back; this audit row must not go with it.
    deps.db.mustCommit();
    deps.audit
      .record({
        type: 'refresh_token.key_mismatch',
        actor: { type: 'client', id: clientId },
        clientId,
        outcome: 'failure',
        details: { token_sha256: sha256(ctx.oidc.params?.refresh_token), dpop: ctx.get('DPoP') ? 'another key' : 'no proof' },
      })
      .catch((error: unknown) => deps.log.error({ err: error }, 'audit record failed'));
  }
}
