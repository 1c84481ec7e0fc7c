/**
 * Admin bearer tokens: ADMIN_TOKEN (named "admin") and ADMIN_TOKENS ("name:token,…"), each
 * audited as its own actor. Presented tokens are compared by SHA-256 digest in constant time,
 * against every configured token, so neither the length nor which token matched shows in timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminToken } from '../config.ts';
import { bearerOf } from '../http/authorization.ts';

const digest = (v: string) => createHash('sha256').update(v).digest();

/** Returns the name of the admin token in an `Authorization: Bearer …` header, if any. */
export function adminTokenVerifier(tokens: readonly AdminToken[]): (authorization: string | undefined) => string | undefined {
  const known = tokens.map((t) => ({ name: t.name, digest: digest(t.token) }));
  return (authorization) => {
    const presented = bearerOf(authorization);
    if (!presented) return undefined;
    const candidate = digest(presented);
    let matched: string | undefined;
    for (const k of known) if (timingSafeEqual(candidate, k.digest) && matched === undefined) matched = k.name;
    return matched;
  };
}
