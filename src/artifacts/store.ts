/**
 * oidc_artifacts and replay_detection: every credential oidc-provider issues, keyed by the
 * SHA-256 of its value, and single-use markers. Consumption and replay checks are one atomic
 * statement each, so concurrent requests cannot both win.
 */
import { hashId } from '../storage/hash-id.ts';
import type { Db } from '../storage/db.ts';
import { sqlLiteral } from '../storage/sql-literal.ts';
import { deleteBatch } from '../storage/delete-batch.ts';

export type Payload = Record<string, unknown>;

export interface StoredArtifact {
  payload: Payload;
  consumedAt: Date | null;
  grantId: string | null;
}

export interface ArtifactOwners {
  grantId: string | null;
  clientId: string | null;
}

export async function upsertArtifact(db: Db, model: string, id: string, owners: ArtifactOwners, payload: Payload, expiresAt: Date): Promise<void> {
  await db.query(
    `INSERT INTO oidc_artifacts (model, id_hash, grant_id, client_id, payload, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (model, id_hash) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at`,
    [model, hashId(id), owners.grantId, owners.clientId, payload, expiresAt],
  );
}

/**
 * The same upsert, sent with the unit of work's COMMIT (Db.atCommit) instead of on its own: one
 * round trip less for a credential nothing reads back before the request ends. It is durable
 * exactly when the rest of the request is (a failed statement fails the commit: no 200).
 */
export function upsertArtifactAtCommit(
  db: Db,
  model: string,
  id: string,
  owners: ArtifactOwners,
  payload: Payload,
  expiresAt: Date,
  /** Asked at the COMMIT: false drops the write (destroyed, or its grant revoked, since). */
  stillWanted: () => boolean = () => true,
): void {
  const hash = hashLiteral(id);
  const values = [sqlLiteral(model), hash, sqlLiteral(owners.grantId), sqlLiteral(owners.clientId), `${sqlLiteral(payload)}::jsonb`, sqlLiteral(expiresAt)];
  db.atCommit(() =>
    stillWanted()
      ? `INSERT INTO oidc_artifacts (model, id_hash, grant_id, client_id, payload, expires_at) VALUES (${values.join(', ')})
     ON CONFLICT (model, id_hash) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at`
      : undefined,
  );
}

const hashLiteral = (id: string) => `decode(${sqlLiteral(hashId(id).toString('hex'))}, 'hex')`;

/**
 * Consumes an artifact whose row this transaction holds locked and read unconsumed, with the
 * COMMIT: nobody else can consume it meanwhile, and if somehow it was, the commit fails
 * (consume_held_artifact, migration 065), so the request cannot answer 200.
 */
export function consumeHeldArtifactAtCommit(db: Db, model: string, id: string): void {
  const statement = `SELECT consume_held_artifact(${sqlLiteral(model)}, ${hashLiteral(id)})`;
  db.atCommit(() => statement);
}

export async function countArtifactsOfClient(db: Db, clientId: string): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM oidc_artifacts WHERE client_id = $1', [clientId]);
  return r.rows[0]!.n;
}

/** Deletes every credential issued to a client, grant-bound or not (client credentials). */
export async function deleteArtifactsOfClient(db: Db, clientId: string): Promise<number> {
  return (await db.query('DELETE FROM oidc_artifacts WHERE client_id = $1', [clientId])).rowCount;
}

export async function findArtifact(db: Db, model: string, id: string): Promise<StoredArtifact | undefined> {
  const r = await db.query<{ payload: Payload; consumed_at: Date | null; grant_id: string | null }>(
    'SELECT payload, consumed_at, grant_id FROM oidc_artifacts WHERE model = $1 AND id_hash = $2 AND expires_at > now()',
    [model, hashId(id)],
  );
  const row = r.rows[0];
  return row && { payload: row.payload, consumedAt: row.consumed_at, grantId: row.grant_id };
}

/**
 * A device code by the user code its user typed (RFC 8628 §3.3). User codes are short-lived and
 * low-entropy by design (guessing is bounded by a rate limit, not by their secrecy), so they are
 * looked up as stored; the device code itself is not stored, only sealed (see the adapter).
 */
export async function findDeviceCodeByUserCode(db: Db, userCode: string): Promise<StoredArtifact | undefined> {
  const r = await db.query<{ payload: Payload; consumed_at: Date | null; grant_id: string | null }>(
    `SELECT payload, consumed_at, grant_id FROM oidc_artifacts WHERE model = 'DeviceCode' AND payload->>'userCode' = $1 AND expires_at > now()`,
    [userCode],
  );
  const row = r.rows[0];
  return row && { payload: row.payload, consumedAt: row.consumed_at, grantId: row.grant_id };
}

/** The grant an artifact belongs to, read without a lock (to know which grant row to lock first). */
export async function grantOfArtifact(db: Db, model: string, id: string): Promise<string | null> {
  const r = await db.query<{ grant_id: string | null }>('SELECT grant_id FROM oidc_artifacts WHERE model = $1 AND id_hash = $2', [model, hashId(id)]);
  return r.rows[0]?.grant_id ?? null;
}

/**
 * Marks an artifact consumed if nobody did before; false when it lost (already consumed, or
 * deleted by a revocation). A concurrent consumer waits for this transaction's row lock.
 */
export async function consumeArtifact(db: Db, model: string, id: string): Promise<boolean> {
  const r = await db.query('UPDATE oidc_artifacts SET consumed_at = now() WHERE model = $1 AND id_hash = $2 AND consumed_at IS NULL', [model, hashId(id)]);
  return r.rowCount === 1;
}

export async function deleteArtifact(db: Db, model: string, id: string): Promise<void> {
  await db.query('DELETE FROM oidc_artifacts WHERE model = $1 AND id_hash = $2', [model, hashId(id)]);
}

const RECORD_ONCE = (hash: string, expiresAt: string) =>
  `INSERT INTO replay_detection (id_hash, expires_at) VALUES (${hash}, ${expiresAt})
     ON CONFLICT (id_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE replay_detection.expires_at <= now()`;

/**
 * Records a single-use marker; false when it was already recorded (a replay). A marker recorded
 * stays recorded even if the request then fails and rolls back (Db.keepOnRollback): the
 * statement is idempotent, so running it again alone is safe.
 */
export async function recordOnce(db: Db, id: string, expiresAt: Date): Promise<boolean> {
  const r = await db.query(RECORD_ONCE('$1', '$2'), [hashId(id), expiresAt]);
  if (r.rowCount !== 1) return false;
  keepRecorded(db, id, expiresAt);
  return true;
}

/**
 * Records two different single-use markers in one statement (one round trip); for each, true
 * when this call recorded it, false when it was already recorded. Unlike recordOnce, neither is
 * kept on rollback yet: the caller keeps each with keepRecorded once it is used (a marker
 * recorded ahead for a check that may never come must roll back with its request).
 */
export async function recordPair(db: Db, first: string, second: string, expiresAt: Date): Promise<[boolean, boolean]> {
  if (first === second) throw new TypeError('recordPair takes two different markers');
  // RETURNING lists only the rows this statement inserted (or took over once expired).
  const r = await db.query<{ first: boolean }>(
    `INSERT INTO replay_detection (id_hash, expires_at) VALUES ($1, $3), ($2, $3)
       ON CONFLICT (id_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE replay_detection.expires_at <= now()
       RETURNING id_hash = $1 AS first`,
    [hashId(first), hashId(second), expiresAt],
  );
  return [r.rows.some((row) => row.first), r.rows.some((row) => !row.first)];
}

/** A marker recorded in this unit of work stays recorded if the work rolls back (Db.keepOnRollback). */
export function keepRecorded(db: Db, id: string, expiresAt: Date): void {
  db.keepOnRollback(RECORD_ONCE(hashLiteral(id), sqlLiteral(expiresAt)));
}

/** The statement that takes back a marker this unit of work recorded (for Db.atCommit). */
export const unrecordStatement = (id: string): string => `DELETE FROM replay_detection WHERE id_hash = ${hashLiteral(id)}`;

/**
 * One bounded batch of each purge: at most `limit` rows, picked by an index and deleted by ctid,
 * so each statement stays far below the statement timeout however large the backlog. Each
 * returns how many rows it deleted; the caller repeats until a batch comes back short.
 */
export const purgeBatches = {
  /** Expired credentials (oidc_artifacts_expiry_idx). */
  oidc_artifacts: (db: Db, limit: number) => deleteBatch(db, 'oidc_artifacts', 'expires_at < now()', limit),
  /** Expired single-use markers (replay_detection_expiry_idx). */
  replay_detection: (db: Db, limit: number) => deleteBatch(db, 'replay_detection', 'expires_at < now()', limit),
  /** Tombstones, once every token of their grant could have expired (grants_revoked_idx). */
  // A revoked delegation stays while its parent lives: it is what refuses handing that parent's
  // tokens to the same client again (RFC 8693 token exchange, migration 040).
  revoked_grants: (db: Db, limit: number, graceSeconds: number) =>
    deleteBatch(
      db,
      'grants',
      `revoked_at < now() - make_interval(secs => ${Math.floor(graceSeconds)})
       AND (parent_grant_id IS NULL OR NOT EXISTS (SELECT 1 FROM grants p WHERE p.id = grants.parent_grant_id AND p.revoked_at IS NULL))`,
      limit,
    ),
  /** Grants past their absolute lifetime that nobody revoked (`/account` makes one per session; grants_expiry_idx). */
  expired_grants: (db: Db, limit: number) => deleteBatch(db, 'grants', 'revoked_at IS NULL AND expires_at < now()', limit),
};
