/**
 * audit_events: inserted by the request that caused them, sealed into the chain afterwards in
 * one place under one lock, read back for export and verification, purged from the oldest end.
 */
import type { Db } from '../storage/db.ts';
import { chainHash, type ChainedFields } from './chain.ts';

export const ACTOR_TYPES = ['user', 'admin', 'client', 'system'] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

/** An event as recorded, before it is stored. */
export interface AuditEvent {
  occurredAt: Date;
  type: string;
  actorType: ActorType;
  actorId: string | null;
  clientId: string | null;
  accountId: string | null;
  grantId: string | null;
  scopes: string | null;
  resource: string | null;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  outcome: 'success' | 'failure';
  details: Record<string, unknown>;
}

/** A stored row, as exported (JSON lines) and verified. seq, prev_hash and hash are null until sealed. */
export interface AuditRow {
  id: number;
  occurred_at: string;
  event_type: string;
  actor_type: string;
  actor_id: string | null;
  client_id: string | null;
  account_id: string | null;
  grant_id: string | null;
  scopes: string | null;
  resource: string | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  outcome: string;
  details: Record<string, unknown>;
  seq: number | null;
  prev_hash: string | null;
  hash: string | null;
}

const CONTENT_COLUMNS = 'occurred_at, event_type, actor_type, actor_id, client_id, account_id, grant_id, scopes, resource, ip, user_agent, request_id, outcome, details';
const COLUMNS = `id, ${CONTENT_COLUMNS}, seq, prev_hash, hash`;
const CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('agentauth:audit'))";
const SEAL_BATCH = 500;

interface RawRow extends Omit<AuditRow, 'id' | 'seq' | 'occurred_at'> {
  id: string | number;
  seq: string | number | null;
  occurred_at: Date;
}

const toRow = (r: RawRow): AuditRow => ({ ...r, id: Number(r.id), seq: r.seq === null ? null : Number(r.seq), occurred_at: r.occurred_at.toISOString() });

/** What the chain hash covers: the row's identity, content, position and predecessor. */
export const fieldsOf = (row: AuditRow & { seq: number; prev_hash: string }): ChainedFields => ({
  id: row.id, seq: row.seq, occurredAt: row.occurred_at, eventType: row.event_type, actorType: row.actor_type, actorId: row.actor_id,
  clientId: row.client_id, accountId: row.account_id, grantId: row.grant_id, scopes: row.scopes, resource: row.resource,
  ip: row.ip, userAgent: row.user_agent, requestId: row.request_id, outcome: row.outcome, details: row.details, prevHash: row.prev_hash,
});

export async function readAnchor(db: Db): Promise<{ seq: number; hash: string }> {
  const r = await db.query<{ seq: string; hash: string }>('SELECT seq::text AS seq, hash FROM audit_chain_anchor WHERE id = 1');
  return { seq: Number(r.rows[0]!.seq), hash: r.rows[0]!.hash };
}

/** Stores events in the current transaction. No lock: concurrent requests insert side by side. */
export async function insertEvents(db: Db, events: AuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  const values: unknown[] = [];
  const tuples = events.map((e) => {
    const base = values.length;
    values.push(e.occurredAt, e.type, e.actorType, e.actorId, e.clientId, e.accountId, e.grantId, e.scopes, e.resource, e.ip, e.userAgent, e.requestId, e.outcome, e.details);
    return `(${Array.from({ length: 14 }, (_, i) => `$${base + i + 1}`).join(', ')})`;
  });
  await db.query(`INSERT INTO audit_events (${CONTENT_COLUMNS}) VALUES ${tuples.join(', ')}`, values);
}

/**
 * Extends the chain with committed rows not yet in it, oldest id first. One sealer at a time
 * (the chain lock), so positions are gapless; rows of transactions still open are invisible
 * here and are sealed by a later pass. Returns how many rows it sealed.
 */
export async function sealPending(db: Db, key: Buffer): Promise<number> {
  return db.tx(async () => {
    await db.query(CHAIN_LOCK);
    const pending = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT ${SEAL_BATCH}`);
    if (pending.rows.length === 0) return 0;
    // Order by the column, not a text alias: '9' sorts after '10'.
    const last = await db.query<{ seq: string; hash: string }>('SELECT seq::text AS seq, hash FROM audit_events WHERE seq IS NOT NULL ORDER BY audit_events.seq DESC LIMIT 1');
    let { seq, hash } = last.rows[0] ? { seq: Number(last.rows[0].seq), hash: last.rows[0].hash } : await readAnchor(db);
    const values: unknown[] = [];
    const tuples: string[] = [];
    for (const raw of pending.rows) {
      seq += 1;
      const row = { ...toRow(raw), seq, prev_hash: hash };
      hash = chainHash(key, fieldsOf(row));
      const base = values.length;
      tuples.push(`($${base + 1}::bigint, $${base + 2}::bigint, $${base + 3}, $${base + 4})`);
      values.push(row.id, seq, row.prev_hash, hash);
    }
    await db.query(
      `UPDATE audit_events AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash
       FROM (VALUES ${tuples.join(', ')}) AS v(id, seq, prev_hash, hash) WHERE e.id = v.id`,
      values,
    );
    return pending.rows.length;
  });
}

/** Sealed rows after position `afterSeq`, in chain order, a page at a time. */
export async function readChainPage(db: Db, afterSeq: number, limit: number): Promise<(AuditRow & { seq: number; prev_hash: string; hash: string })[]> {
  const r = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, [afterSeq, limit]);
  return r.rows.map(toRow) as (AuditRow & { seq: number; prev_hash: string; hash: string })[];
}

export async function countUnsealed(db: Db): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events WHERE seq IS NULL');
  return r.rows[0]!.n;
}

export interface AuditFilter {
  since?: Date;
  accountId?: string;
  clientId?: string;
  limit?: number;
}

export async function findEvents(db: Db, filter: AuditFilter): Promise<AuditRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.since) where.push(`occurred_at >= $${params.push(filter.since)}`);
  if (filter.accountId) where.push(`account_id = $${params.push(filter.accountId)}`);
  if (filter.clientId) where.push(`client_id = $${params.push(filter.clientId)}`);
  const limit = `LIMIT $${params.push(filter.limit ?? 100_000)}`;
  const r = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${limit}`, params);
  return r.rows.map(toRow);
}

/**
 * Deletes the sealed rows that occurred before `cutoff` (a prefix of the chain) and moves the
 * anchor to the last deleted row, so the rest still verifies. Returns the last deleted seq.
 */
export async function purgeBefore(db: Db, cutoff: Date): Promise<{ purged: number; throughSeq: number } | undefined> {
  await db.query(CHAIN_LOCK);
  // A prefix only: stop before the first sealed row that is still to be kept.
  const r = await db.query<{ seq: string; hash: string }>(
    `SELECT seq::text AS seq, hash FROM audit_events
     WHERE seq IS NOT NULL
       AND seq < coalesce((SELECT min(seq) FROM audit_events WHERE seq IS NOT NULL AND occurred_at >= $1), 9223372036854775807)
     ORDER BY audit_events.seq DESC LIMIT 1`,
    [cutoff],
  );
  const last = r.rows[0];
  if (!last) return undefined;
  await db.query("SELECT set_config('agentauth.audit_purge', 'on', true)");
  const deleted = await db.query('DELETE FROM audit_events WHERE seq <= $1', [last.seq]);
  await db.query("SELECT set_config('agentauth.audit_purge', 'off', true)");
  await db.query('UPDATE audit_chain_anchor SET seq = $1, hash = $2 WHERE id = 1', [last.seq, last.hash]);
  return { purged: deleted.rowCount, throughSeq: Number(last.seq) };
}
