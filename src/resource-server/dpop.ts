/**
 * DPoP (RFC 9449) on the resource server's side: checking the proof that comes with a DPoP-bound
 * access token (§4.3, §7), remembering proof `jti`s, and issuing resource server nonces (§9).
 *
 * The replay memory is in this process, bounded: a proof is remembered for as long as its `iat`
 * is acceptable (twice the proof age, plus the clock tolerance), at most `maxProofs` at once. At
 * that bound new proofs are refused (fail closed) until old ones age out; several instances of
 * one API each remember only their own proofs, so a proof could be replayed once at each
 * instance within its short window: require nonces, or route a client to one instance, where
 * that matters.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { decodeProtectedHeader, EmbeddedJWK, errors as joseErrors, jwtVerify, type JWK } from 'jose';

/** What a proof may be signed with: asymmetric only (Ed25519 is EdDSA's fully-specified name). */
export const DPOP_PROOF_ALGS = ['ES256', 'EdDSA', 'Ed25519', 'PS256'] as const;

/** A refusal of the proof: `use_dpop_nonce` comes with a nonce to send next time. */
export class DpopProofError extends Error {
  readonly code: 'invalid_dpop_proof' | 'use_dpop_nonce';
  readonly nonce: string | undefined;
  constructor(code: DpopProofError['code'], description: string, nonce?: string) {
    super(description);
    this.name = 'DpopProofError';
    this.code = code;
    this.nonce = nonce;
  }
}

export interface DpopOptions {
  /** Only DPoP-bound tokens are accepted (Bearer refused); said in the RFC 9728 metadata. Default false. */
  required?: boolean;
  /** Seconds a proof's iat may lie in the past or future (default 60). */
  maxProofAgeSeconds?: number;
  /** Proofs remembered at once for replay detection (default 100 000); see the module comment. */
  maxProofs?: number;
  /**
   * Resource server nonces (§9): every proof must carry one this server issued. `true` uses a
   * random secret (one instance); give the same 32-byte secret to every instance of the API.
   */
  nonces?: boolean | { secret: Uint8Array };
}

export interface CheckedProof {
  /** The JWK SHA-256 thumbprint of the proof's key: what the token's cnf.jkt must be. */
  jkt: string;
}

/** Seconds a nonce is good for: issued for the current step, accepted for it and the one before. */
const NONCE_STEP_SECONDS = 300;
const MAX_JTI_LENGTH = 256;
const MAX_PROOF_LENGTH = 8192;

/** The request as the proof must name it: method and URL without query or fragment (§4.3 items 9, 10). */
export interface ProofTarget {
  method: string;
  url: URL;
  accessToken: string;
}

export function createDpopVerifier(options: DpopOptions = {}, clockToleranceSeconds = 5) {
  const maxAge = options.maxProofAgeSeconds ?? 60;
  const replay = new ProofMemory(options.maxProofs ?? 100_000, (2 * maxAge + clockToleranceSeconds) * 1000);
  const nonceSecret = options.nonces ? (options.nonces === true ? randomBytes(32) : Buffer.from(options.nonces.secret)) : undefined;

  // A nonce is the same for a whole step: made once per step, not per request.
  const nonces = new Map<number, string>();
  const nonceAt = (step: number) => {
    let nonce = nonces.get(step);
    if (nonce === undefined) {
      if (nonces.size >= 4) nonces.clear();
      nonce = createHmac('sha256', nonceSecret!).update(`dpop-nonce:${step}`).digest('base64url');
      nonces.set(step, nonce);
    }
    return nonce;
  };
  const currentStep = () => Math.floor(Date.now() / 1000 / NONCE_STEP_SECONDS);
  /** The nonce to hand out now, if nonces are on. */
  const nextNonce = (): string | undefined => (nonceSecret ? nonceAt(currentStep()) : undefined);
  const nonceIsGood = (nonce: string) => {
    const step = currentStep();
    return [step, step - 1].some((s) => safeEqual(nonceAt(s), nonce));
  };

  /** Checks one request's DPoP header against the request; throws DpopProofError. */
  async function check(header: string | string[] | undefined, target: ProofTarget): Promise<CheckedProof> {
    if (header === undefined) throw new DpopProofError('invalid_dpop_proof', 'a DPoP proof is required with a DPoP access token');
    // Node joins repeated headers with ", "; a compact JWS holds no comma (§4.3 item 1: exactly one).
    if (Array.isArray(header) || header.includes(',')) throw new DpopProofError('invalid_dpop_proof', 'send exactly one DPoP header');
    if (header.length > MAX_PROOF_LENGTH) throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof is too large');
    let payload: Record<string, unknown>;
    let jwk: JWK;
    try {
      const protectedHeader = decodeProtectedHeader(header);
      // A private key in the header is a broken client, and nothing to verify with (§4.3 item 7).
      if (protectedHeader.jwk && ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'].some((m) => m in protectedHeader.jwk!)) {
        throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof header holds a private key');
      }
      const verified = await jwtVerify(header, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: [...DPOP_PROOF_ALGS] });
      payload = verified.payload as Record<string, unknown>;
      jwk = verified.protectedHeader.jwk as JWK;
    } catch (error) {
      if (error instanceof DpopProofError) throw error;
      if (error instanceof joseErrors.JOSEError || error instanceof TypeError) {
        throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof is not a valid dpop+jwt signed with the key in its header (ES256, EdDSA or PS256)');
      }
      throw error;
    }
    const { htm, htu, iat, jti, ath, nonce } = payload;
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH)
      throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof needs a jti');
    if (htm !== target.method) throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof is for another HTTP method (htm)');
    if (typeof htu !== 'string' || withoutQuery(htu) !== withoutQuery(target.url.href)) {
      throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof is for another URL (htu)');
    }
    if (ath !== createHash('sha256').update(target.accessToken).digest('base64url')) {
      throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof is not for this access token (ath)');
    }
    if (nonceSecret && (typeof nonce !== 'string' || !nonceIsGood(nonce))) {
      throw new DpopProofError('use_dpop_nonce', 'this resource server requires a DPoP nonce: use the one in the DPoP-Nonce header', nextNonce());
    }
    const now = Date.now() / 1000;
    if (typeof iat !== 'number' || Math.abs(now - iat) > maxAge + clockToleranceSeconds) {
      throw new DpopProofError('invalid_dpop_proof', `the DPoP proof's iat must be within ${maxAge} seconds of now`);
    }
    const jkt = thumbprintOf(jwk);
    const remembered = replay.remember(`${jkt}:${jti}`);
    if (remembered === 'full') throw new DpopProofError('invalid_dpop_proof', 'too many DPoP proofs at once: try again shortly');
    if (remembered === 'seen') throw new DpopProofError('invalid_dpop_proof', 'this DPoP proof was already used: make a new one for every request');
    return { jkt };
  }

  return { check, nextNonce, noncesRequired: nonceSecret !== undefined, remembered: () => replay.size };
}

export type DpopVerifier = ReturnType<typeof createDpopVerifier>;

const withoutQuery = (url: string): string | undefined => {
  const parsed = URL.parse(url);
  if (!parsed) return undefined;
  parsed.search = '';
  parsed.hash = '';
  return parsed.href;
};

/** RFC 7638 §3.2: a key's required members, in lexicographic order. */
const THUMBPRINT_MEMBERS: Record<string, readonly string[]> = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] };

/**
 * The JWK SHA-256 thumbprint (RFC 7638), as jose's calculateJwkThumbprint makes it, with
 * node:crypto's hash: jose's goes through WebCrypto's asynchronous digest, ten times the cost.
 */
function thumbprintOf(jwk: JWK): string {
  const members = typeof jwk.kty === 'string' ? THUMBPRINT_MEMBERS[jwk.kty] : undefined;
  if (!members) throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof key has an unknown kty');
  const canonical: Record<string, string> = {};
  for (const member of members) {
    const value = (jwk as Record<string, unknown>)[member];
    if (typeof value !== 'string' || value.length === 0) throw new DpopProofError('invalid_dpop_proof', 'the DPoP proof key lacks a required member');
    canonical[member] = value;
  }
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url');
}

const safeEqual = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** Proof ids seen within their window, oldest first; never forgets one early. */
class ProofMemory {
  readonly #seen = new Map<string, number>();
  readonly #max: number;
  readonly #lifetimeMs: number;

  constructor(max: number, lifetimeMs: number) {
    this.#max = max;
    this.#lifetimeMs = lifetimeMs;
  }

  get size(): number {
    return this.#seen.size;
  }

  remember(id: string, now = Date.now()): 'new' | 'seen' | 'full' {
    this.#forgetExpired(now);
    if (this.#seen.has(id)) return 'seen';
    if (this.#seen.size >= this.#max) return 'full';
    this.#seen.set(id, now + this.#lifetimeMs);
    return 'new';
  }

  /** Entries are inserted in time order with one lifetime, so the expired ones are at the front. */
  #forgetExpired(now: number): void {
    for (const [id, until] of this.#seen) {
      if (until > now) return;
      this.#seen.delete(id);
    }
  }
}
