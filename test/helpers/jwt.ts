/**
 * Hand-made JWTs for attacking the client-assertion checks: any header, any claims, any
 * algorithm, including the ones a correct library would refuse to produce.
 */
import { constants, createHash, createHmac, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');

export type Alg = 'ES256' | 'EdDSA' | 'PS256' | 'RS256' | 'HS256' | 'none';

export interface TestKey {
  alg: Alg;
  kid: string;
  privateKey: KeyObject;
  publicJwk: Record<string, unknown>;
}

export function generateTestKey(alg: 'ES256' | 'EdDSA' | 'PS256' | 'RS256', kid = randomBytes(6).toString('hex')): TestKey {
  const pair =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'EdDSA'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { alg, kid, privateKey: pair.privateKey, publicJwk: { ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' } };
}

export function signJwt(header: Record<string, unknown>, payload: Record<string, unknown>, key?: KeyObject | Buffer): string {
  return signJws(header, JSON.stringify(payload), key);
}

/** Signs a payload given as text, so a test can send JSON that JSON.stringify cannot write (1e400). */
export function signJws(header: Record<string, unknown>, payloadText: string, key?: KeyObject | Buffer): string {
  const input = `${b64(JSON.stringify(header))}.${b64(payloadText)}`;
  const alg = header.alg;
  let signature: Buffer;
  if (alg === 'none') signature = Buffer.alloc(0);
  else if (alg === 'HS256')
    signature = createHmac('sha256', key as Buffer)
      .update(input)
      .digest();
  else if (alg === 'ES256') signature = sign('sha256', Buffer.from(input), { key: key as KeyObject, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'EdDSA') signature = sign(null, Buffer.from(input), key as KeyObject);
  else if (alg === 'PS256') signature = sign('sha256', Buffer.from(input), { key: key as KeyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  else signature = sign('sha256', Buffer.from(input), key as KeyObject);
  return `${input}.${b64(signature)}`;
}

/** A well-formed client assertion for clientId at audience, with overrides applied last. */
export function clientAssertion(
  key: TestKey,
  clientId: string,
  audience: string,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): string {
  const now = Math.floor(Date.now() / 1000);
  return signJwt(
    { alg: key.alg, kid: key.kid, typ: 'JWT', ...header },
    { iss: clientId, sub: clientId, aud: audience, jti: randomBytes(12).toString('base64url'), iat: now, exp: now + 120, ...claims },
    key.privateKey,
  );
}

/**
 * A DPoP proof (RFC 9449 §4.2) signed by `key`, its public JWK in the header; `ath` is computed
 * from `accessToken` when given. Overrides are applied last, so a test can break any part.
 */
export function dpopProof(
  key: TestKey,
  htm: string,
  htu: string,
  options: { accessToken?: string; nonce?: string; claims?: Record<string, unknown>; header?: Record<string, unknown> } = {},
): string {
  const { kid: _kid, alg: _alg, use: _use, ...jwk } = key.publicJwk;
  const ath = options.accessToken ? createHash('sha256').update(options.accessToken).digest('base64url') : undefined;
  return signJwt(
    { alg: key.alg, typ: 'dpop+jwt', jwk, ...options.header },
    {
      htm,
      htu,
      jti: randomBytes(12).toString('base64url'),
      iat: Math.floor(Date.now() / 1000),
      ...(ath ? { ath } : {}),
      ...(options.nonce ? { nonce: options.nonce } : {}),
      ...options.claims,
    },
    key.privateKey,
  );
}

/** The RFC 7638 thumbprint of a test key's public JWK (what cnf.jkt holds). */
export function thumbprintOf(key: TestKey): string {
  const jwk = key.publicJwk;
  const members =
    jwk.kty === 'EC'
      ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
      : jwk.kty === 'OKP'
        ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
        : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}
