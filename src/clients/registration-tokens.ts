/** Initial access tokens (RFC 7591 §3): created by an admin, stored as SHA-256, used up atomically. */
import { randomBytes } from 'node:crypto';
import { hashId } from '../storage/hash-id.ts';
import type { Db } from '../storage/db.ts';
import { deleteBatch } from '../storage/delete-batch.ts';

export interface RegistrationTokenInfo {
  expires_at: string;
  uses: number | null;
}

export async function createRegistrationToken(db: Db, expiresInSeconds: number, uses: number | null): Promise<{ token: string } & RegistrationTokenInfo> {
  const token = `iat_${randomBytes(32).toString('base64url')}`;
  const expiresAt = new Date(Date.now() + expiresInSeconds * 1000);
  await db.query('INSERT INTO registration_tokens (id_hash, expires_at, uses_left) VALUES ($1, $2, $3)', [hashId(token), expiresAt, uses]);
  return { token, expires_at: expiresAt.toISOString(), uses };
}

/**
 * Locks a usable token until this transaction ends, so two registrations cannot both spend its
 * last use. Returns its key, or undefined when it is unknown, expired or used up.
 */
export async function lockRegistrationToken(db: Db, token: string): Promise<Buffer | undefined> {
  const idHash = hashId(token);
  const r = await db.query('SELECT 1 FROM registration_tokens WHERE id_hash = $1 AND expires_at > now() FOR UPDATE', [idHash]);
  return r.rowCount === 1 ? idHash : undefined;
}

/** Spends one use of a locked token; the last use deletes it. */
export async function spendRegistrationToken(db: Db, idHash: Buffer): Promise<void> {
  await db.query('DELETE FROM registration_tokens WHERE id_hash = $1 AND uses_left = 1', [idHash]);
  await db.query('UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE id_hash = $1 AND uses_left > 1', [idHash]);
}

/** Deletes up to `limit` expired tokens; returns how many (the maintenance run repeats it). */
export async function purgeExpiredRegistrationTokens(db: Db, limit: number): Promise<number> {
  return deleteBatch(db, 'registration_tokens', 'expires_at < now()', limit);
}
