/**
 * audit_events and audit_seals. A request inserts its events under a shared gate lock; the
 * sealer briefly takes that gate exclusively to learn the highest id no open transaction can
 * still fill in below, then seals every row up to it. Export and verification read back; a purge
 * removes whole seals from the oldest end and moves the anchor.
 */
import type { Db } from '../storage/db.ts';
import { sqlLiteral, type LiteralValue } from '../storage/sql-literal.ts';
import { rowDigest, sealHash, type SealFields } from './chain.ts';

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

/** A stored row, as exported (JSON lines) and verified. */
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
  /** In exports: the user's name and the agent's name at the time (see NAME_COLUMNS). */
  account_name?: string | null;
  client_name?: string | null;
  details: Record<string, unknown>;
}

export interface Seal extends SealFields {
  hash: string;
}

const CONTENT_COLUMNS =
  'occurred_at, event_type, actor_type, actor_id, client_id, account_id, grant_id, scopes, resource, ip, user_agent, request_id, outcome, details';
const COLUMNS = `id, ${CONTENT_COLUMNS}`;
/** Held shared by every transaction inserting events, taken exclusively for a moment by the sealer. */
const GATE = "hashtext('agentauth:audit-gate')";
/** One sealer or purge at a time. */
const SEAL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('agentauth:audit-seal'))";
const SEAL_BATCH = 1000;

type RawRow = Omit<AuditRow, 'id' | 'occurred_at'> & { id: string | number; occurred_at: Date };
const toRow = (r: RawRow): AuditRow => ({ ...r, id: Number(r.id), occurred_at: r.occurred_at.toISOString() });

interface RawSeal {
  seq: string;
  after_id: string;
  last_id: string;
  row_ids: (string | number)[];
  row_digests: string[];
  sealed_at: Date;
  prev_hash: string;
  hash: string;
}
const toSeal = (r: RawSeal): Seal => ({
  seq: Number(r.seq),
  afterId: Number(r.after_id),
  lastId: Number(r.last_id),
  rowIds: r.row_ids.map(Number),
  rowDigests: r.row_digests,
  sealedAt: r.sealed_at.toISOString(),
  prevHash: r.prev_hash,
  hash: r.hash,
});
const SEAL_COLUMNS = 'seq::text AS seq, after_id::text AS after_id, last_id::text AS last_id, row_ids, row_digests, sealed_at, prev_hash, hash';

export async function readAnchor(db: Db): Promise<{ seq: number; lastId: number; hash: string }> {
  const r = await db.query<{ seq: string; last_id: string; hash: string }>(
    'SELECT seq::text AS seq, last_id::text AS last_id, hash FROM audit_chain_anchor WHERE id = 1',
  );
  const row = r.rows[0]!;
  return { seq: Number(row.seq), lastId: Number(row.last_id), hash: row.hash };
}

const INSERT_TYPES = ['timestamptz', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'jsonb'];

/**
 * The statement that stores events, sent with the COMMIT of the transaction that recorded them
 * (Db.atCommit). It takes the shared gate before the first row draws its id; requests never
 * queue on it, only the sealer does.
 */
export function insertStatement(events: AuditEvent[]): string | undefined {
  if (events.length === 0) return undefined;
  const tuples = events.map((e) => {
    const values: LiteralValue[] = [
      e.occurredAt,
      e.type,
      e.actorType,
      e.actorId,
      e.clientId,
      e.accountId,
      e.grantId,
      e.scopes,
      e.resource,
      e.ip,
      e.userAgent,
      e.requestId,
      e.outcome,
      e.details,
    ];
    return `(${values.map((v, i) => `${sqlLiteral(v)}::${INSERT_TYPES[i]}`).join(', ')})`;
  });
  return `WITH gate AS (SELECT pg_advisory_xact_lock_shared(${GATE}))
    INSERT INTO audit_events (${CONTENT_COLUMNS})
    SELECT v.* FROM gate, (VALUES ${tuples.join(', ')}) AS v(${CONTENT_COLUMNS})`;
}

/**
 * Holds the seal lock to the end of the current transaction: no seal or purge commits meanwhile,
 * so a reader sees one consistent chain (anchor, seals and rows) across many statements. The
 * holder must not wait for another connection while it holds it: whoever seals settles first,
 * with settledMaxId, and only then takes the lock.
 */
export async function holdSealLock(db: Db): Promise<void> {
  await db.query(SEAL_LOCK);
}

async function lastSeal(db: Db): Promise<{ seq: number; lastId: number; hash: string }> {
  // Order by the column, not a text alias: '9' sorts after '10'.
  const r = await db.query<{ seq: string; last_id: string; hash: string }>(
    'SELECT seq::text AS seq, last_id::text AS last_id, hash FROM audit_seals ORDER BY audit_seals.seq DESC LIMIT 1',
  );
  const row = r.rows[0];
  return row ? { seq: Number(row.seq), lastId: Number(row.last_id), hash: row.hash } : readAnchor(db);
}

/** Tries for the gate this many times, GATE_RETRY_MS apart, before it waits in line for it. */
const GATE_TRIES = 40;
const GATE_RETRY_MS = 5;

/**
 * An exclusive request waiting for a lock makes every later shared request wait behind it
 * (PostgreSQL grants locks in order): a sealer waiting in line would stall every request's
 * COMMIT for as long as it waits. So it tries without waiting, between the requests' short
 * holds, and queues only after GATE_TRIES misses, so sealing cannot starve under constant load.
 */
async function takeGateExclusively(db: Db): Promise<void> {
  for (let i = 0; i < GATE_TRIES; i++) {
    const r = await db.query<{ ok: boolean }>(`SELECT pg_try_advisory_xact_lock(${GATE}) AS ok`);
    if (r.rows[0]?.ok) return;
    await new Promise((resolve) => setTimeout(resolve, GATE_RETRY_MS));
  }
  await db.query(`SELECT pg_advisory_xact_lock(${GATE})`);
}

/**
 * The highest event id below which every row is final: taking the gate exclusively waits for
 * the transactions inserting events to end, and any that starts later draws a higher id. Its own
 * short transaction (so the gate is released at its end, even after an error); on PGlite there is
 * no other transaction to wait for.
 */
export async function settledMaxId(db: Db): Promise<number> {
  return db.detached(() =>
    db.tx(async () => {
      if (db.kind === 'postgres') await takeGateExclusively(db);
      const r = await db.query<{ max: string | null }>('SELECT max(id)::text AS max FROM audit_events');
      return Number(r.rows[0]?.max ?? 0);
    }),
  );
}

/**
 * Seals the rows not yet sealed up to `maxId` (up to a batch); returns how many rows it sealed.
 * `maxId` comes from settledMaxId, called before, on a connection of its own that is given back
 * before the sealing transaction takes one: a sealer holding the seal lock and waiting for a
 * second connection would stall every other holder of the lock, and with them a small pool.
 * Settling first is safe: a row final then stays final, and a purge removes only sealed rows.
 */
export async function sealPending(db: Db, key: Buffer, maxId: number): Promise<number> {
  return db.tx(async () => {
    await holdSealLock(db);
    const previous = await lastSeal(db);
    if (maxId <= previous.lastId) return 0;
    const rows = await eventsInRange(db, previous.lastId, maxId, SEAL_BATCH);
    if (rows.length === 0) return 0;
    const lastId = rows.length === SEAL_BATCH ? rows.at(-1)!.id : maxId;
    const seal: SealFields = {
      seq: previous.seq + 1,
      afterId: previous.lastId,
      lastId,
      rowIds: rows.map((row) => row.id),
      rowDigests: rows.map((row) => rowDigest({ ...row })),
      sealedAt: new Date().toISOString(),
      prevHash: previous.hash,
    };
    await db.query(
      'INSERT INTO audit_seals (seq, after_id, last_id, row_ids, row_digests, sealed_at, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
      [seal.seq, seal.afterId, seal.lastId, seal.rowIds, seal.rowDigests, seal.sealedAt, seal.prevHash, sealHash(key, seal)],
    );
    return rows.length;
  });
}

/** Events with afterId < id <= lastId, in id order. */
export async function eventsInRange(db: Db, afterId: number, lastId: number, limit = 100_000): Promise<AuditRow[]> {
  const r = await db.query<RawRow>(`SELECT ${COLUMNS} FROM audit_events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`, [afterId, lastId, limit]);
  return r.rows.map(toRow);
}

/** Seals after position `afterSeq`, in chain order, a page at a time. */
export async function readSeals(db: Db, afterSeq: number, limit: number): Promise<Seal[]> {
  const r = await db.query<RawSeal>(`SELECT ${SEAL_COLUMNS} FROM audit_seals WHERE seq > $1 ORDER BY audit_seals.seq LIMIT $2`, [afterSeq, limit]);
  return r.rows.map(toSeal);
}

/** Whether a row after `id` (not sealed yet) records the purge through seal `throughSeq`. */
export async function purgeRecordedAfter(db: Db, id: number, throughSeq: number): Promise<boolean> {
  const r = await db.query("SELECT 1 FROM audit_events WHERE id > $1 AND event_type = 'audit.purged' AND details->>'through_seq' = $2 LIMIT 1", [
    id,
    String(throughSeq),
  ]);
  return r.rows.length > 0;
}

export async function countAfter(db: Db, id: number): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events WHERE id > $1', [id]);
  return r.rows[0]!.n;
}

export interface AuditFilter {
  since?: Date;
  accountId?: string;
  clientId?: string;
}

/**
 * The names beside the ids, as they were when the event happened: the agent's from the latest
 * client.registered / client.updated row at or before it (the index of migration 030; the
 * clients table when the audit trail no longer has it), the user's from accounts (usernames
 * never change). Joined at read time, so the sealed rows themselves stay as written.
 */
const NAME_COLUMNS = `(SELECT username FROM accounts a WHERE a.id = e.account_id) AS account_name,
  COALESCE(
    (SELECT h.details->>'client_name' FROM audit_events h
      WHERE h.client_id = e.client_id AND h.id <= e.id AND h.event_type IN ('client.registered', 'client.updated') AND h.details ? 'client_name'
      ORDER BY h.id DESC LIMIT 1),
    (SELECT c.metadata->>'client_name' FROM clients c WHERE c.client_id = e.client_id)) AS client_name`;

/**
 * "alice via Notes agent: token.issued", "admin deploy-bot: client.disabled (Notes agent)": a row
 * read aloud. A row naming a delegation chain (RFC 8693) reads every link: "alice via Reporting
 * Agent via Coding Agent: token.issued" (`chainNames`: client names by id).
 */
export function summaryOf(row: AuditRow, chainNames: ReadonlyMap<string, string> = new Map()): string {
  const agent = row.client_name ?? row.client_id;
  if (row.actor_type === 'admin' || row.actor_type === 'system') {
    return `${row.actor_type}${row.actor_id ? ` ${row.actor_id}` : ''}: ${row.event_type}${agent ? ` (${agent}${row.account_name ? `, ${row.account_name}` : ''})` : row.account_name ? ` (${row.account_name})` : ''}`;
  }
  const user = row.account_name ?? row.account_id;
  const chain = chainOf(row);
  const via = chain.length > 1 ? chain.map((id) => chainNames.get(id) ?? id).join(' via ') : agent;
  if (user && via) return `${user} via ${via}: ${row.event_type}`;
  return `${user ?? via ?? row.actor_type}: ${row.event_type}`;
}

const chainOf = (row: AuditRow): string[] => {
  const chain = row.details.chain;
  return Array.isArray(chain) ? chain.filter((c): c is string => typeof c === 'string') : [];
};

/** Rows with their summaries; the names of chain links read in one query for the page. */
async function withSummaries(db: Db, rows: AuditRow[]): Promise<(AuditRow & { summary: string })[]> {
  const ids = [...new Set(rows.flatMap(chainOf))];
  const names = new Map<string, string>();
  if (ids.length) {
    const r = await db.query<{ client_id: string; name: string | null }>(
      "SELECT client_id, metadata->>'client_name' AS name FROM clients WHERE client_id = ANY($1::text[])",
      [ids],
    );
    for (const row of r.rows) if (row.name) names.set(row.client_id, row.name);
  }
  return rows.map((row) => ({ ...row, summary: summaryOf(row, names) }));
}

/** The largest page an export or the admin route reads at once. */
export const MAX_AUDIT_PAGE = 10_000;

/**
 * One page of events after the cursor `after` (an event id), in id order. Exports read page
 * after page with the last id as the next cursor: no cap, and each query stays short.
 */
export async function findEvents(db: Db, filter: AuditFilter, after: number, limit: number): Promise<AuditRow[]> {
  const params: unknown[] = [after];
  const where = ['id > $1'];
  if (filter.since) where.push(`occurred_at >= $${params.push(filter.since)}`);
  if (filter.accountId) where.push(`account_id = $${params.push(filter.accountId)}`);
  // A client is found as the row's client or as any link of the delegation chain it names.
  if (filter.clientId) {
    const n = params.push(filter.clientId);
    where.push(`(client_id = $${n} OR (details ? 'chain' AND details -> 'chain' ? $${n}))`);
  }
  const r = await db.query<RawRow>(
    `SELECT ${COLUMNS}, ${NAME_COLUMNS} FROM audit_events e WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${params.push(Math.min(limit, MAX_AUDIT_PAGE))}`,
    params,
  );
  return withSummaries(db, r.rows.map(toRow));
}

/**
 * Deletes the oldest seals made before `cutoff`, covering about `maxRows` events at most (at
 * least one seal), with the events they cover (all of which occurred before they were made), and
 * moves the anchor to the last of them, so the rest still verifies. Seals are made in time
 * order, so those before the cutoff are a prefix of the chain: called until it returns
 * undefined, it purges everything before the cutoff in short transactions.
 */
export async function purgeBefore(db: Db, cutoff: Date, maxRows: number): Promise<{ purged: number; throughSeq: number } | undefined> {
  await holdSealLock(db);
  const r = await db.query<RawSeal>(
    `SELECT ${SEAL_COLUMNS} FROM audit_seals
     WHERE sealed_at < $1 AND (last_id <= (SELECT min(after_id) FROM audit_seals) + $2 OR seq = (SELECT min(seq) FROM audit_seals))
     ORDER BY audit_seals.seq DESC LIMIT 1`,
    [cutoff, maxRows],
  );
  const last = r.rows[0] && toSeal(r.rows[0]);
  if (!last) return undefined;
  await db.query("SELECT set_config('agentauth.audit_purge', 'on', true)");
  const deleted = await db.query('DELETE FROM audit_events WHERE id <= $1', [last.lastId]);
  await db.query('DELETE FROM audit_seals WHERE seq <= $1', [last.seq]);
  await db.query("SELECT set_config('agentauth.audit_purge', 'off', true)");
  await db.query('UPDATE audit_chain_anchor SET seq = $1, last_id = $2, hash = $3 WHERE id = 1', [last.seq, last.lastId, last.hash]);
  return { purged: deleted.rowCount, throughSeq: last.seq };
}
