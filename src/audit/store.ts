/**
 * audit_events: appended in chain order under one lock, read back for export and verification,
 * purged from the oldest end with the anchor moved along.
 */
import type { Db } from '../storage/db.ts';
import { chainHash, type ChainedFields } from './chain.ts';

export const ACTOR_TYPES = ['user', 'admin', 'client', 'system'] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

/** An event as recorded, before it takes its place in the chain. */
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

/** A stored row, as exported (JSON lines) and verified. */
export interface AuditRow {
  seq: number;
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
  prev_hash: string;
  hash: string;
}

const COLUMNS = 'seq, occurred_at, event_type, actor_type, actor_id, client_id, account_id, grant_id, scopes, resource, ip, user_agent, request_id, outcome, details, prev_hash, hash';
const CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('agentauth:audit'))";

interface RawRow extends Omit<AuditRow, 'seq' | 'occurred_at'> {
  seq: string | number;
  occurred_at: Date;
}

const toRow = (r: RawRow): AuditRow => ({ ...r, seq: Number(r.seq), occurred_at: r.occurred_at.toISOString() });

export const fieldsOf = (row: AuditRow): ChainedFields => ({
  seq: row.seq, occurredAt: row.occurred_at, eventType: row.event_type, actorType: row.actor_type, actorId: row.actor_id,
  clientId: row.client_id, accountId: row.account_id, grantId: row.grant_id, scopes: row.scopes, resource: row.resource,
  ip: row.ip, userAgent: row.user_agent, requestId: row.request_id, outcome: row.outcome, details: row.details, prevHash: row.prev_hash,
});

export async function readAnchor(db: Db): Promise<{ seq: number; hash: string }> {
  const r = await db.query<{ seq: string; hash: string }>('SELECT seq::text AS seq, hash FROM audit_chain_anchor WHERE id = 1');
  return { seq: Number(r.rows[0]!.seq), hash: r.rows[0]!.hash };
}

/**
 * Appends events at the end of the chain. Runs just before its transaction commits and holds
 * the chain lock until then, so chain order is commit order and nothing interleaves.
 */
export async function appendChained(db: Db, key: Buffer, events: AuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(CHAIN_LOCK);
  // Order by the column, not the text alias: '9' sorts after '10'.
  const last = await db.query<{ seq: string; hash: string }>('SELECT seq::text AS seq, hash FROM audit_events ORDER BY audit_events.seq DESC LIMIT 1');
  let { seq, hash } = last.rows[0] ? { seq: Number(last.rows[0].seq), hash: last.rows[0].hash } : await readAnchor(db);
  const values: unknown[] = [];
  const tuples: string[] = [];
  for (const e of events) {
    seq += 1;
    const row: AuditRow = {
      seq, occurred_at: e.occurredAt.toISOString(), event_type: e.type, actor_type: e.actorType, actor_id: e.actorId,
      client_id: e.clientId, account_id: e.accountId, grant_id: e.grantId, scopes: e.scopes, resource: e.resource,
      ip: e.ip, user_agent: e.userAgent, request_id: e.requestId, outcome: e.outcome, details: e.details, prev_hash: hash, hash: '',
    };
    row.hash = chainHash(key, fieldsOf(row));
    hash = row.hash;
    const base = values.length;
    tuples.push(`(${Array.from({ length: 17 }, (_, i) => `$${base + i + 1}`).join(', ')})`);
    values.push(row.seq, row.occurred_at, row.event_type, row.actor_type, row.actor_id, row.client_id, row.account_id, row.grant_id,
      row.scopes, row.resource, row.ip, row.user_agent, row.request_id, row.outcome, row.details, row.prev_hash, row.hash);
  }
  await db.query(`INSERT INTO audit_events (${COLUMNS}) VALUES ${tuples.join(', ')}`, values);
}

/** Rows after `afterSeq`, in chain order, a page at a time. */
export async function readChainPage(db: Db, afterSeq: number, limit: number): Promise<AuditRow[]> {
  const r = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, [afterSeq, limit]);
  return r.rows.map(toRow);
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
  const r = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq ${limit}`, params);
  return r.rows.map(toRow);
}

/**
 * Deletes every row that occurred before `cutoff` (a prefix of the chain) and moves the anchor to
 * the last deleted row, so the rest still verifies. Returns the last deleted seq, if any.
 */
export async function purgeBefore(db: Db, cutoff: Date): Promise<{ purged: number; throughSeq: number } | undefined> {
  await db.query(CHAIN_LOCK);
  // The purge removes a prefix only: stop before the first row that is still to be kept.
  const r = await db.query<{ seq: string; hash: string }>(
    `SELECT seq::text AS seq, hash FROM audit_events
     WHERE seq < coalesce((SELECT min(seq) FROM audit_events WHERE occurred_at >= $1), 9223372036854775807)
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
