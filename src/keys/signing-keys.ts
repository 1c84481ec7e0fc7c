/**
 * Signing keys: generated on first start, stored with the private part sealed under the
 * key-encryption key, published in the JWKS. Rotation adds a newer key that signs from then on;
 * older keys stay published so tokens they signed still verify.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';

/** A JSON Web Key as stored and handed to oidc-provider. */
export type JsonWebKey = Record<string, unknown>;
import type { Db } from '../storage/db.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';
import { seal, unseal } from './sealed.ts';

const ALG = 'ES256';

export interface SigningKey {
  kid: string;
  alg: string;
  createdAt: Date;
  privateJwk: JsonWebKey;
}

export interface PublicKeyInfo {
  kid: string;
  alg: string;
  created_at: string;
}

function generate(): { kid: string; publicJwk: JsonWebKey; privateJwk: JsonWebKey } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = randomBytes(12).toString('base64url');
  const common = { kid, alg: ALG, use: 'sig' };
  return {
    kid,
    publicJwk: { ...publicKey.export({ format: 'jwk' }), ...common },
    privateJwk: { ...privateKey.export({ format: 'jwk' }), ...common },
  };
}

async function insertKey(db: Db, kek: Buffer): Promise<PublicKeyInfo> {
  const key = generate();
  const r = await db.query<{ created_at: Date }>(
    'INSERT INTO signing_keys (kid, alg, public_jwk, private_jwk_enc) VALUES ($1, $2, $3, $4) RETURNING created_at',
    [key.kid, ALG, key.publicJwk, seal(kek, JSON.stringify(key.privateJwk), `signing_keys:${key.kid}`)],
  );
  return { kid: key.kid, alg: ALG, created_at: r.rows[0]!.created_at.toISOString() };
}

/** Creates the first key unless one exists; safe when several instances start at once. */
export async function ensureSigningKey(db: Db, kek: Buffer): Promise<void> {
  await db.tx(async () => {
    await db.query("SELECT pg_advisory_xact_lock(hashtext('agentauth:signing_keys'))");
    const r = await db.query('SELECT 1 FROM signing_keys LIMIT 1');
    if (r.rows.length === 0) await insertKey(db, kek);
  });
}

/** Adds and promotes a new key; every instance picks it up through the config generation. */
export async function rotateSigningKey(db: Db, kek: Buffer): Promise<PublicKeyInfo> {
  return db.tx(async () => {
    const key = await insertKey(db, kek);
    await bumpConfigGeneration(db);
    return key;
  });
}

/** Every key, newest first: oidc-provider signs with the first key that fits the algorithm. */
export async function loadSigningKeys(db: Db, kek: Buffer): Promise<SigningKey[]> {
  const r = await db.query<{ kid: string; alg: string; created_at: Date; private_jwk_enc: string }>(
    'SELECT kid, alg, created_at, private_jwk_enc FROM signing_keys ORDER BY created_at DESC, kid',
  );
  return r.rows.map((row) => ({
    kid: row.kid,
    alg: row.alg,
    createdAt: row.created_at,
    privateJwk: JSON.parse(unseal(kek, row.private_jwk_enc, `signing_keys:${row.kid}`)) as JsonWebKey,
  }));
}
