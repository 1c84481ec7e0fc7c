/**
 * Key pairs for agents (their private_key_jwt credentials), made by the CLI so a product team
 * needs no other tool: the private JWK goes to a file only this user can read, the public half
 * is registered or printed for a jwks_uri. The kid is the key's RFC 7638 thumbprint.
 */
import { open, unlink } from 'node:fs/promises';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';

export const AGENT_KEY_ALGS = ['ES256', 'EdDSA', 'PS256'] as const;
export type AgentKeyAlg = (typeof AGENT_KEY_ALGS)[number];

export interface AgentKeyPair {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
}

export async function generateAgentKeyPair(alg: AgentKeyAlg = 'ES256'): Promise<AgentKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  // An Ed25519 key signs as "EdDSA" or as "Ed25519" (RFC 9864) depending on the library
  // (oauth4webapi and openid-client use the latter): publish no alg, so both verify.
  const meta = alg === 'EdDSA' ? { kid, use: 'sig' } : { kid, alg, use: 'sig' };
  return { kid, privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta } };
}

/**
 * Creates `file` (never replacing one: an existing key may be the only copy) readable only by
 * this user, before anything is registered; `discard()` removes it if registration then fails.
 */
export async function reservePrivateKeyFile(file: string): Promise<{ write(jwk: JWK): Promise<void>; discard(): Promise<void> }> {
  const handle = await open(file, 'wx', 0o600);
  return {
    async write(jwk) {
      await handle.writeFile(`${JSON.stringify(jwk, null, 2)}\n`);
      await handle.close();
    },
    async discard() {
      await handle.close().catch(() => {});
      await unlink(file).catch(() => {});
    },
  };
}
