/**
 * Refresh rotation's state on a refresh token's row (src/oauth/refresh-rotation.ts): whether it
 * was used, its successor, and the sealed answer a retry within the client's window gets again.
 */
import type { Db } from '../storage/db.ts';
import { hashId } from '../storage/hash-id.ts';

/** A refresh token's rotation state, with its client's retry window. */
export interface RefreshState {
  grantId: string | null;
  clientId: string | null;
  consumed: boolean;
  successorHash: Buffer | null;
  retryResponse: string | null;
  retryUntil: Date | null;
  clientRetryWindow: number | null;
}

/**
 * Reads a refresh token's rotation state; with `lock`, takes its row lock (after the caller took
 * the grant's, see lockGrant).
 */
export async function refreshState(db: Db, value: string, lock: boolean): Promise<RefreshState | undefined> {
  const r = await db.query<{
    grant_id: string | null;
    client_id: string | null;
    consumed_at: Date | null;
    successor_hash: Buffer | null;
    retry_response: string | null;
    retry_until: Date | null;
    refresh_retry_window: number | null;
  }>(
    `SELECT a.grant_id, a.client_id, a.consumed_at, a.successor_hash, a.retry_response, a.retry_until, c.refresh_retry_window
     FROM oidc_artifacts a LEFT JOIN clients c ON c.client_id = a.client_id
     WHERE a.model = 'RefreshToken' AND a.id_hash = $1 ${lock ? 'FOR UPDATE OF a' : ''}`,
    [hashId(value)],
  );
  const row = r.rows[0];
  return (
    row && {
      grantId: row.grant_id,
      clientId: row.client_id,
      consumed: row.consumed_at !== null,
      successorHash: row.successor_hash,
      retryResponse: row.retry_response,
      retryUntil: row.retry_until,
      clientRetryWindow: row.refresh_retry_window,
    }
  );
}

/** Records a rotated refresh token's successor and, for the retry window, the sealed response. */
export async function recordSuccessor(db: Db, value: string, successorValue: string, sealedResponse: string | null, retryUntil: Date | null): Promise<void> {
  await db.query("UPDATE oidc_artifacts SET successor_hash = $2, retry_response = $3, retry_until = $4 WHERE model = 'RefreshToken' AND id_hash = $1", [
    hashId(value),
    hashId(successorValue),
    sealedResponse,
    retryUntil,
  ]);
}

/** Whether the refresh token stored under this hash is still unused and unexpired. */
export async function refreshTokenIsLive(db: Db, idHash: Buffer): Promise<boolean> {
  const r = await db.query("SELECT 1 FROM oidc_artifacts WHERE model = 'RefreshToken' AND id_hash = $1 AND consumed_at IS NULL AND expires_at > now()", [
    idHash,
  ]);
  return r.rowCount === 1;
}
