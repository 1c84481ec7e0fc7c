/**
 * Signing keys: generated on first start, stored with the private part sealed under the
 * key-encryption key, published in the JWKS. Rotation publishes a newer key at once, signs with it
 * only after a propagation delay (so resource servers that cached the key set have fetched it
 * again by then), and unpublishes the keys it replaced after the longest token lifetime.
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

/**
 * How long a rotated key is published before it signs: longer than the resource-server helper
 * caches agentauth's key set (10 minutes, src/resource-server/index.ts), with room for clock skew.
 */
export const DEFAULT_KEY_PROPAGATION_SECONDS = 15 * 60;
/** oidc-provider's ID token lifetime (we do not change it): the longest-lived thing it signs by default. */
const ID_TOKEN_TTL_SECONDS = 3600;
/** Verifiers accept tokens a little past exp (the helper: 5 s; others more). */
const VERIFIER_SKEW_SECONDS = 300;

/**
 * How long a replaced key must stay published: the longest lifetime of a JWT it may have signed
 * (access tokens, a resource server's own lifetime, ID tokens) plus verifiers' clock skew.
 */
export async function longestSignedLifetime(db: Db, accessTokenTtl: number): Promise<number> {
  const r = await db.query<{ ttl: number | null }>('SELECT max(access_token_ttl)::int AS ttl FROM resource_servers');
  return Math.max(accessTokenTtl, r.rows[0]?.ttl ?? 0, ID_TOKEN_TTL_SECONDS) + VERIFIER_SKEW_SECONDS;
}

export interface RotationSchedule {
  /** Seconds the new key is published before it signs (longer than any verifier caches the key set). */
  propagationSeconds: number;
  /** Seconds after the new key starts signing that the keys it replaces stay published. */
  retireAfterSeconds: number;
}

export interface Rotation extends PublicKeyInfo {
  signs_from: string;
  /** When the keys it replaces stop being published. */
  retires_previous_at: string;
}

/**
 * Adds a key that is published now and signs after the propagation delay; the keys it replaces
 * are unpublished once every token they could have signed has expired. Every instance picks the
 * change up through the config generation, and each switches on its own when the time comes.
 */
export async function rotateSigningKey(db: Db, kek: Buffer, schedule: RotationSchedule): Promise<Rotation> {
  return db.tx(async () => {
    const key = await insertKey(db, kek);
    const r = await db.query<{ signs_from: Date; retire_at: Date }>(
      `UPDATE signing_keys SET signs_from = now() + make_interval(secs => $2) WHERE kid = $1
       RETURNING signs_from, signs_from + make_interval(secs => $3) AS retire_at`,
      [key.kid, schedule.propagationSeconds, schedule.retireAfterSeconds],
    );
    const { signs_from: signsFrom, retire_at: retireAt } = r.rows[0]!;
    await db.query('UPDATE signing_keys SET retire_at = $2 WHERE kid <> $1 AND (retire_at IS NULL OR retire_at > $2)', [key.kid, retireAt]);
    await bumpConfigGeneration(db);
    return { ...key, signs_from: signsFrom.toISOString(), retires_previous_at: retireAt.toISOString() };
  });
}

export interface ScheduledKey {
  kid: string;
  signsFrom: number;
  retireAt: number | null;
}

/**
 * Which keys are published at `now`, signing key first (oidc-provider signs with the first key
 * that fits the algorithm), and when that next changes. The signing key is the newest whose time
 * has come; a key never retires while it is the only one that could sign.
 */
export function keySchedule<K extends ScheduledKey>(keys: K[], now: number): { published: K[]; nextChange: number | undefined } {
  const newestFirst = [...keys].sort((a, b) => b.signsFrom - a.signsFrom || (a.kid < b.kid ? -1 : 1));
  const live = newestFirst.filter((k) => k.retireAt === null || k.retireAt > now);
  const signing = live.find((k) => k.signsFrom <= now) ?? newestFirst.find((k) => k.signsFrom <= now) ?? newestFirst.at(-1);
  const published = signing ? [signing, ...live.filter((k) => k !== signing)] : live;
  const upcoming = keys.flatMap((k) => (k.retireAt === null ? [k.signsFrom] : [k.signsFrom, k.retireAt])).filter((t) => t > now);
  return { published, nextChange: upcoming.length ? Math.min(...upcoming) : undefined };
}

/** The published keys at `now`, signing key first, and when the schedule next changes. */
export async function loadKeySchedule(db: Db, kek: Buffer, now = Date.now()): Promise<{ keys: SigningKey[]; nextChange: number | undefined }> {
  const r = await db.query<{ kid: string; alg: string; created_at: Date; signs_from: Date; retire_at: Date | null; private_jwk_enc: string }>(
    'SELECT kid, alg, created_at, signs_from, retire_at, private_jwk_enc FROM signing_keys',
  );
  const rows = r.rows.map((row) => ({ ...row, signsFrom: row.signs_from.getTime(), retireAt: row.retire_at?.getTime() ?? null }));
  const { published, nextChange } = keySchedule(rows, now);
  const keys = published.map((row) => ({
    kid: row.kid,
    alg: row.alg,
    createdAt: row.created_at,
    privateJwk: JSON.parse(unseal(kek, row.private_jwk_enc, `signing_keys:${row.kid}`)) as JsonWebKey,
  }));
  return { keys, nextChange };
}

/** The published keys, the one that signs now first. */
export async function loadSigningKeys(db: Db, kek: Buffer): Promise<SigningKey[]> {
  return (await loadKeySchedule(db, kek)).keys;
}
