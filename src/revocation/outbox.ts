/** revocation_events: the outbox of Security Event Tokens to push after a grant is revoked. */
import { randomUUID } from 'node:crypto';
import { seal } from '../keys/sealed.ts';
import { grantPermissions } from '../grants/permissions.ts';
import type { Db } from '../storage/db.ts';
import { deleteBatch } from '../storage/delete-batch.ts';

export interface PendingEvent {
  jti: string;
  kind: EventKind;
  /** The SET's aud: the agent's client_id, or the resource server's identifier. */
  audience: string;
  /** The revoked grant; null for messages about approvals (kinds ciba_ping, approval_webhook). */
  grantId: string | null;
  clientId: string;
  accountId: string;
  subscriberUri: string;
  reason: string;
  revokedAt: Date;
  attempts: number;
  /** What a ciba_ping or approval_webhook message needs (secrets sealed under the key-encryption key). */
  payload: Record<string, unknown> | null;
}

export interface EventRecord extends PendingEvent {
  nextAttemptAt: Date;
  deliveredAt: Date | null;
  lastError: string | null;
}

/**
 * set, backchannel_logout: a grant was revoked. ciba_ping: an agent's CIBA request was answered
 * (CIBA Core §10.2). approval_webhook: the product is told a user has a request waiting.
 */
export type EventKind = 'set' | 'backchannel_logout' | 'ciba_ping' | 'approval_webhook';
const URI_FIELD: Record<'set' | 'backchannel_logout', string> = { set: 'event_delivery_uri', backchannel_logout: 'backchannel_logout_uri' };

/** Queues what the grant's agent asked for: a signed event, a back-channel logout, both or neither. */
export async function enqueueRevocationEvents(db: Db, grant: { grantId: string; clientId: string; accountId: string }, reason: string): Promise<number> {
  let queued = 0;
  for (const kind of Object.keys(URI_FIELD) as (keyof typeof URI_FIELD)[]) {
    const r = await db.query(
      `INSERT INTO revocation_events (jti, kind, grant_id, client_id, account_id, subscriber_uri, audience, reason)
       SELECT $1, $2, $3, client_id, $4, metadata->>$5, client_id, $6 FROM clients WHERE client_id = $7 AND metadata ? $5`,
      [randomUUID(), kind, grant.grantId, grant.accountId, URI_FIELD[kind], reason, grant.clientId],
    );
    queued += r.rowCount;
  }
  // Resource servers the grant reached (RFC 8707), read by the one reader of a grant's
  // permissions, that subscribed to revocations.
  const stored = await db.query<{ payload: unknown }>('SELECT payload FROM grants WHERE id = $1', [grant.grantId]);
  const reached = [...new Set(grantPermissions(stored.rows[0]?.payload).flatMap((p) => (p.resource ? [p.resource] : [])))];
  const servers =
    reached.length === 0
      ? { rows: [] }
      : await db.query<{ identifier: string; event_delivery_uri: string }>(
          'SELECT identifier, event_delivery_uri FROM resource_servers WHERE event_delivery_uri IS NOT NULL AND identifier = ANY($1::text[])',
          [reached],
        );
  for (const rs of servers.rows) {
    await db.query(
      `INSERT INTO revocation_events (jti, kind, grant_id, client_id, account_id, subscriber_uri, audience, reason)
       VALUES ($1, 'set', $2, $3, $4, $5, $6, $7)`,
      [randomUUID(), grant.grantId, grant.clientId, grant.accountId, rs.event_delivery_uri, rs.identifier, reason],
    );
    queued += 1;
  }
  return queued;
}

/** AAD of a ping's sealed secrets: bound to its outbox row. */
export const pingAad = (jti: string) => `ciba-ping:${jti}`;

/** Queues the CIBA ping that tells a ping-mode agent its request was answered (CIBA Core §10.2). */
export async function enqueueCibaPing(
  db: Db,
  kek: Buffer,
  ping: { clientId: string; accountId: string; endpoint: string; authReqId: string; notificationToken: string },
): Promise<void> {
  const jti = randomUUID();
  const sealed = seal(kek, JSON.stringify({ auth_req_id: ping.authReqId, client_notification_token: ping.notificationToken }), pingAad(jti));
  await db.query(
    `INSERT INTO revocation_events (jti, kind, grant_id, client_id, account_id, subscriber_uri, audience, reason, payload)
     VALUES ($1, 'ciba_ping', NULL, $2, $3, $4, $2, 'approval_answered', $5)`,
    [jti, ping.clientId, ping.accountId, ping.endpoint, { sealed }],
  );
}

/** Queues the signed event that tells the product a user has an approval request waiting. */
export async function enqueueApprovalWebhook(
  db: Db,
  url: string,
  event: { accountId: string; clientId: string; claims: Record<string, unknown> },
): Promise<void> {
  await db.query(
    `INSERT INTO revocation_events (jti, kind, grant_id, client_id, account_id, subscriber_uri, audience, reason, payload)
     VALUES ($1, 'approval_webhook', NULL, $2, $3, $4, $4, 'approval_requested', $5)`,
    [randomUUID(), event.clientId, event.accountId, url, event.claims],
  );
}

type Row = {
  jti: string;
  kind: EventKind;
  audience: string;
  grant_id: string | null;
  client_id: string;
  account_id: string;
  subscriber_uri: string;
  reason: string;
  revoked_at: Date;
  attempts: number;
  next_attempt_at: Date;
  delivered_at: Date | null;
  last_error: string | null;
  payload: Record<string, unknown> | null;
};
const RECORD_COLUMNS =
  'jti, kind, audience, grant_id, client_id, account_id, subscriber_uri, reason, revoked_at, attempts, next_attempt_at, delivered_at, last_error, payload';

/**
 * Leases up to `limit` due events for `leaseSeconds` (FOR UPDATE SKIP LOCKED: instances never
 * send the same event at once; a crashed instance's lease simply runs out and the event is due again).
 */
export async function leaseDueEvents(db: Db, limit: number, leaseSeconds: number): Promise<PendingEvent[]> {
  const r = await db.query<Row>(
    `UPDATE revocation_events SET next_attempt_at = now() + make_interval(secs => $2)
     WHERE jti IN (SELECT jti FROM revocation_events WHERE delivered_at IS NULL AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING ${RECORD_COLUMNS}`,
    [limit, leaseSeconds],
  );
  return r.rows.map(toRecord);
}

const toRecord = (r: Row): EventRecord => ({
  jti: r.jti,
  kind: r.kind,
  audience: r.audience,
  grantId: r.grant_id,
  clientId: r.client_id,
  accountId: r.account_id,
  subscriberUri: r.subscriber_uri,
  reason: r.reason,
  revokedAt: r.revoked_at,
  attempts: r.attempts,
  nextAttemptAt: r.next_attempt_at,
  deliveredAt: r.delivered_at,
  lastError: r.last_error,
  payload: r.payload,
});

export async function markDelivered(db: Db, jti: string): Promise<void> {
  await db.query('UPDATE revocation_events SET delivered_at = now(), attempts = attempts + 1, last_error = NULL WHERE jti = $1', [jti]);
}

export async function markFailed(db: Db, jti: string, error: string, retryInSeconds: number): Promise<void> {
  await db.query('UPDATE revocation_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + make_interval(secs => $3) WHERE jti = $1', [
    jti,
    error.slice(0, 500),
    retryInSeconds,
  ]);
}

export async function listEvents(db: Db, pendingOnly: boolean, limit = 500): Promise<EventRecord[]> {
  const r = await db.query<Row>(`SELECT * FROM revocation_events ${pendingOnly ? 'WHERE delivered_at IS NULL' : ''} ORDER BY revoked_at DESC, jti LIMIT $1`, [
    limit,
  ]);
  return r.rows.map(toRecord);
}

/** How many events wait for delivery and how long the oldest has (for the backlog gauges). */
export async function outboxBacklog(db: Db): Promise<{ pending: number; oldestSeconds: number }> {
  // Only undelivered rows: the partial index revocation_events_due_idx holds just those.
  const r = await db.query<{ pending: number; oldest: number }>(
    `SELECT count(*)::int AS pending, COALESCE(EXTRACT(EPOCH FROM now() - min(revoked_at)), 0)::float8 AS oldest
     FROM revocation_events WHERE delivered_at IS NULL`,
  );
  const row = r.rows[0];
  return { pending: Number(row?.pending ?? 0), oldestSeconds: Math.max(0, Number(row?.oldest ?? 0)) };
}

/** Forgets events delivered more than `days` ago (pending ones are kept until delivered). */
/** Deletes up to `limit` events delivered over `days` ago; returns how many (revocation_events_delivered_idx). */
export async function purgeDeliveredEvents(db: Db, limit: number, days = 30): Promise<number> {
  return deleteBatch(db, 'revocation_events', `delivered_at < now() - make_interval(days => ${Math.floor(days)})`, limit);
}
