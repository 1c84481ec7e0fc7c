/**
 * Refresh rotation's state on a refresh token's row (src/oauth/refresh-rotation.ts): whether it
 * was used, its successor, and the sealed answer a retry within the client's window gets again.
 */
import type { Db } from '../storage/db.ts';
import { hashId } from '../storage/hash-id.ts';
import { sqlLiteral } from '../storage/sql-literal.ts';

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

/** What a rotation opens with: the grant's row lock, then the token's, and what both rows hold. */
export type OpenedRotation =
  /** A token with no grant, or another client's: nothing was locked (the built-in handler answers). */
  | { locked: false }
  | {
      locked: true;
      grantId: string;
      grantState: 'live' | 'revoked' | 'missing';
      /** The grant's payload when it is live and unexpired (as Grant.find would answer). */
      grantPayload: Record<string, unknown> | null;
      /** Undefined when the token's row was deleted (a revocation) while this waited for the grant. */
      state?: RefreshState & {
        /** The token's stored payload, unless its row has expired (as findArtifact would answer). */
        payload: Record<string, unknown> | null;
        consumedAt: Date | null;
      };
    };

/**
 * Opens a rotation in one round trip (migration 065, lock_refresh_token): reads the token's grant,
 * locks the grant row, then the token row (the lock order of every grant write, see lockGrant),
 * and returns both rows. Undefined for an unknown token.
 */
export async function openRotation(db: Db, value: string, clientId: string | undefined): Promise<OpenedRotation | undefined> {
  const r = await db.query<{
    locked: boolean;
    token_grant_id: string | null;
    grant_state: 'live' | 'revoked' | 'missing' | null;
    grant_live: boolean | null;
    grant_payload: Record<string, unknown> | null;
    token_found: boolean | null;
    token_unexpired: boolean | null;
    token_payload: Record<string, unknown> | null;
    token_client_id: string | null;
    token_consumed_at: Date | null;
    token_successor_hash: Buffer | null;
    token_retry_response: string | null;
    token_retry_until: Date | null;
    client_retry_window: number | null;
  }>('SELECT * FROM lock_refresh_token($1, $2)', [hashId(value), clientId ?? null]);
  const row = r.rows[0];
  if (!row) return undefined;
  if (!row.locked || !row.token_grant_id || !row.grant_state) return { locked: false };
  return {
    locked: true,
    grantId: row.token_grant_id,
    grantState: row.grant_state,
    grantPayload: row.grant_live ? row.grant_payload : null,
    state: row.token_found
      ? {
          grantId: row.token_grant_id,
          clientId: row.token_client_id,
          consumed: row.token_consumed_at !== null,
          consumedAt: row.token_consumed_at,
          successorHash: row.token_successor_hash,
          retryResponse: row.token_retry_response,
          retryUntil: row.token_retry_until,
          clientRetryWindow: row.client_retry_window,
          payload: row.token_unexpired ? row.token_payload : null,
        }
      : undefined,
  };
}

/**
 * Records a rotated refresh token's successor and, for the retry window, the sealed response.
 * Sent with the COMMIT (nothing reads it back in this request; the row is locked until then).
 */
export function recordSuccessor(db: Db, value: string, successorValue: string, sealedResponse: string | null, retryUntil: Date | null): void {
  const hex = (id: string) => `decode(${sqlLiteral(hashId(id).toString('hex'))}, 'hex')`;
  const statement = `UPDATE oidc_artifacts SET successor_hash = ${hex(successorValue)}, retry_response = ${sqlLiteral(sealedResponse)}, retry_until = ${sqlLiteral(retryUntil)}
     WHERE model = 'RefreshToken' AND id_hash = ${hex(value)}`;
  db.atCommit(() => statement);
}

/** Whether the refresh token stored under this hash is still unused and unexpired. */
export async function refreshTokenIsLive(db: Db, idHash: Buffer): Promise<boolean> {
  const r = await db.query("SELECT 1 FROM oidc_artifacts WHERE model = 'RefreshToken' AND id_hash = $1 AND consumed_at IS NULL AND expires_at > now()", [
    idHash,
  ]);
  return r.rowCount === 1;
}
