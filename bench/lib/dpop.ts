/**
 * DPoP proofs for the DPoP variants of the token scenarios (RFC 9449): one ES256 key per run,
 * proofs signed ahead for each URL (htu names the process the request goes to), a fresh jti
 * each, so a run never replays one. Past the prepared ones, each is signed when asked for.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';

const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');

export function dpopProofSource(prepared: number): (htu: string) => string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const header = b64(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } }));
  const proof = (htu: string) => {
    const payload = b64(JSON.stringify({ htm: 'POST', htu, jti: randomBytes(16).toString('base64url'), iat: Math.floor(Date.now() / 1000) }));
    return `${header}.${payload}.${b64(sign('sha256', Buffer.from(`${header}.${payload}`), { key: privateKey, dsaEncoding: 'ieee-p1363' }))}`;
  };
  const pools = new Map<string, string[]>();
  return (htu) => {
    let pool = pools.get(htu);
    if (!pool) {
      pool = Array.from({ length: prepared }, () => proof(htu));
      pools.set(htu, pool);
    }
    return pool.pop() ?? proof(htu);
  };
}
