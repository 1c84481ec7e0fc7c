/**
 * The grants table: what a user allowed an agent. Grants are never deleted by a revocation;
 * revoked_at stays as a tombstone that every grant-bound token insert checks.
 */
import type { Db } from '../storage/db.ts';

export interface GrantRow {
  id: string;
  account_id: string;
  client_id: string;
  payload: Record<string, unknown>;
}

/** Inserts or updates a live grant; false when the grant is revoked (its tombstone wins). */
export async function upsertGrant(db: Db, grant: GrantRow, expiresAt: Date | null): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO grants (id, account_id, client_id, payload, expires_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at, updated_at = now()
       WHERE grants.revoked_at IS NULL`,
    [grant.id, grant.account_id, grant.client_id, grant.payload, expiresAt],
  );
  return r.rowCount === 1;
}

export async function findLiveGrant(db: Db, id: string): Promise<Record<string, unknown> | undefined> {
  const r = await db.query<{ payload: Record<string, unknown> }>(
    'SELECT payload FROM grants WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())',
    [id],
  );
  const row = r.rows[0];
  return row && { ...row.payload, jti: id };
}

/**
 * Takes the grant's row lock until this transaction ends and says whether it still lives.
 *
 * Lock order, everywhere: the grant row first, then its artifacts. Every path that writes an
 * artifact of a grant (insert, consume, delete, revoke) takes this lock first, so concurrent
 * requests on one grant queue up instead of deadlocking, and a token insert racing with a
 * revocation either commits before it (and is deleted by it) or sees the tombstone.
 */
export async function lockGrant(db: Db, id: string): Promise<'live' | 'revoked' | 'missing'> {
  // A row lock lasts until the transaction ends, and every tombstone goes through this module, so
  // within one unit of work the first answer stays true: later calls (a refresh asks four times,
  // a revocation once per token model) cost no round trip.
  const held = heldGrants(db);
  const known = held?.get(id);
  if (known) return known;
  const r = await db.query<{ revoked_at: Date | null }>('SELECT revoked_at FROM grants WHERE id = $1 FOR UPDATE', [id]);
  const row = r.rows[0];
  if (!row) return 'missing';
  const state = row.revoked_at === null ? 'live' : 'revoked';
  held?.set(id, state);
  return state;
}

/** A grant row locked in this unit of work by a statement of its own (refresh rotation's, see openRotation). */
export function rememberGrantLock(db: Db, id: string, state: 'live' | 'revoked'): void {
  heldGrants(db)?.set(id, state);
}

/**
 * Asks later whether this unit of work has tombstoned the grant by then (a write it deferred to
 * the COMMIT must then not happen). Bound now: at the COMMIT the unit of work is no longer current.
 */
export function revokedInThisWork(db: Db, id: string): () => boolean {
  const held = heldGrants(db);
  return () => held?.get(id) === 'revoked';
}

const HELD_GRANTS = Symbol('grant rows locked in this unit of work');
const heldGrants = (db: Db) => db.workState(HELD_GRANTS, () => new Map<string, 'live' | 'revoked'>());
const TOMBSTONED = Symbol('grants tombstoned in this unit of work');
const tombstonedHere = (db: Db) => db.workState(TOMBSTONED, () => new Set<string>());

export interface RevokedGrant {
  grantId: string;
  accountId: string;
  clientId: string;
}

/**
 * Tombstones the grant and deletes every credential issued under it, grant row first (see
 * lockGrant). Idempotent: oidc-provider calls it once per model, concurrently. Returns the grant
 * only from the call that revoked it, so the revocation is audited and announced once.
 */
export async function tombstoneGrant(db: Db, id: string): Promise<RevokedGrant | undefined> {
  return db.tx(async () => {
    // Tombstoned earlier in this same unit of work: its credentials are gone and none can be added.
    if (tombstonedHere(db)?.has(id)) return undefined;
    await lockGrant(db, id);
    // The decision is this one statement: oidc-provider calls us several times at once in one
    // transaction, and only the call whose UPDATE changed the row may queue and audit.
    const r = await db.query<{ account_id: string; client_id: string }>(
      'UPDATE grants SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING account_id, client_id',
      [id],
    );
    await db.query('DELETE FROM oidc_artifacts WHERE grant_id = $1', [id]);
    heldGrants(db)?.set(id, 'revoked');
    tombstonedHere(db)?.add(id);
    const row = r.rows[0];
    if (!row) return undefined;
    // A revocation survives the refusal that caused it (reuse is answered invalid_grant).
    db.mustCommit();
    // Its revocation events are the caller's (revocation/revoke.ts, tombstoneAndNotify).
    return { grantId: id, accountId: row.account_id, clientId: row.client_id };
  });
}

/** Ids of an account's grants that are still live, with any client. */
export async function liveGrantIdsOfAccount(db: Db, accountId: string): Promise<string[]> {
  const r = await db.query<{ id: string }>('SELECT id FROM grants WHERE account_id = $1 AND revoked_at IS NULL ORDER BY id', [accountId]);
  return r.rows.map((row) => row.id);
}

/** Ids of a client's grants that are still live. */
export async function liveGrantIdsOfClient(db: Db, clientId: string): Promise<string[]> {
  const r = await db.query<{ id: string }>('SELECT id FROM grants WHERE client_id = $1 AND revoked_at IS NULL ORDER BY id', [clientId]);
  return r.rows.map((row) => row.id);
}

/** One link of a delegation chain: a grant and the client it was made to. */
export interface ChainLink {
  grantId: string;
  clientId: string;
}

/**
 * The chain a grant belongs to: from the root grant (a user's consent to the first agent) down to
 * this grant, one link per token exchange (RFC 8693). A grant nobody delegated is a chain of one.
 */
export async function grantChain(db: Db, id: string): Promise<ChainLink[]> {
  const r = await db.query<{ id: string; client_id: string; depth: number }>(
    `WITH RECURSIVE up AS (
       SELECT id, client_id, parent_grant_id, 0 AS depth FROM grants WHERE id = $1
       UNION ALL
       SELECT g.id, g.client_id, g.parent_grant_id, up.depth + 1 FROM grants g JOIN up ON g.id = up.parent_grant_id WHERE up.depth < 16
     ) SELECT id, client_id, depth FROM up ORDER BY depth DESC`,
    [id],
  );
  return r.rows.map((row) => ({ grantId: row.id, clientId: row.client_id }));
}

/** The grant made when `clientId` was handed tokens of grant `parentId`, revoked or not. */
export async function findChildGrant(db: Db, parentId: string, clientId: string): Promise<{ id: string; revoked: boolean } | undefined> {
  const r = await db.query<{ id: string; revoked_at: Date | null }>('SELECT id, revoked_at FROM grants WHERE parent_grant_id = $1 AND client_id = $2', [
    parentId,
    clientId,
  ]);
  const row = r.rows[0];
  return row && { id: row.id, revoked: row.revoked_at !== null };
}

/**
 * Inserts the child grant of a token exchange, unless a concurrent exchange made it first; the
 * caller holds the parent's row lock, so a revocation of the parent waits for this transaction.
 */
export async function insertChildGrant(db: Db, grant: GrantRow & { parent_grant_id: string }, expiresAt: Date | null): Promise<void> {
  await db.query(
    `INSERT INTO grants (id, account_id, client_id, payload, expires_at, parent_grant_id) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (parent_grant_id, client_id) WHERE parent_grant_id IS NOT NULL DO NOTHING`,
    [grant.id, grant.account_id, grant.client_id, grant.payload, expiresAt, grant.parent_grant_id],
  );
}

/** The stored payload and expiry of a live grant (for a child grant's scopes to grow). */
export async function liveGrantRow(db: Db, id: string): Promise<{ payload: Record<string, unknown>; expiresAt: Date | null } | undefined> {
  const r = await db.query<{ payload: Record<string, unknown>; expires_at: Date | null }>(
    'SELECT payload, expires_at FROM grants WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())',
    [id],
  );
  const row = r.rows[0];
  return row && { payload: row.payload, expiresAt: row.expires_at };
}

/** Ids of the live grants made by exchanging tokens of this grant (its children, not deeper). */
export async function liveChildGrantIds(db: Db, parentId: string): Promise<string[]> {
  const r = await db.query<{ id: string }>('SELECT id FROM grants WHERE parent_grant_id = $1 AND revoked_at IS NULL ORDER BY id', [parentId]);
  return r.rows.map((row) => row.id);
}
