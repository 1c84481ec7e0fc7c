/** What the connected agents page shows: a user's live grants, their agents, use and activity. */
import type { ClientMetadata, RegistrationKind } from '../clients/store.ts';
import { grantPermissions, type Permission } from '../grants/permissions.ts';
import type { Db } from '../storage/db.ts';

export interface ConnectedAgent {
  grantId: string;
  clientId: string;
  metadata: ClientMetadata | null;
  registration: RegistrationKind | null;
  /** What the grant holds (grants/permissions.ts), `openid` left out: it is not shown as a permission. */
  permissions: Permission[];
  grantedAt: Date;
  lastUsedAt: Date | null;
  liveTokens: number;
  /** Set for a delegation: the grant whose tokens were exchanged for this one's (RFC 8693). */
  parentGrantId: string | null;
}

export interface ActivityEntry {
  grantId: string;
  eventType: string;
  occurredAt: Date;
  ip: string | null;
}

interface Row {
  id: string;
  client_id: string;
  payload: unknown;
  created_at: Date;
  metadata: ClientMetadata | null;
  registration: RegistrationKind | null;
  live_tokens: number;
  last_used: Date | null;
  parent_grant_id: string | null;
}

/**
 * Live grants of an account, newest first, leaving out agentauth's own account-page client.
 * Delegations (grants made by token exchange) are among them, each naming its parent grant.
 */
export async function connectedAgentsFor(db: Db, accountId: string, internalClientId: string): Promise<ConnectedAgent[]> {
  const r = await db.query<Row>(
    `SELECT g.id, g.client_id, g.payload, g.created_at, g.parent_grant_id, c.metadata, c.registration,
       (SELECT count(*)::int FROM oidc_artifacts a WHERE a.grant_id = g.id AND a.consumed_at IS NULL AND a.expires_at > now()) AS live_tokens,
       (SELECT max(e.occurred_at) FROM audit_events e
          WHERE e.account_id = g.account_id AND e.grant_id = g.id AND e.event_type IN ('token.issued', 'refresh_token.rotated')) AS last_used
     FROM grants g LEFT JOIN clients c ON c.client_id = g.client_id
     WHERE g.account_id = $1 AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now()) AND g.client_id <> $2
     ORDER BY g.created_at DESC, g.id`,
    [accountId, internalClientId],
  );
  return r.rows.map((row) => ({
    grantId: row.id,
    clientId: row.client_id,
    metadata: row.metadata,
    registration: row.registration,
    permissions: grantPermissions(row.payload).filter((p) => p.scope !== 'openid'),
    grantedAt: row.created_at,
    lastUsedAt: row.last_used,
    liveTokens: row.live_tokens,
    parentGrantId: row.parent_grant_id,
  }));
}

/** The latest events of these grants (from the audit trail), newest first. */
export async function recentActivity(db: Db, accountId: string, grantIds: string[], perGrant = 5): Promise<Map<string, ActivityEntry[]>> {
  const byGrant = new Map<string, ActivityEntry[]>();
  if (grantIds.length === 0) return byGrant;
  const r = await db.query<{ grant_id: string; event_type: string; occurred_at: Date; ip: string | null }>(
    `SELECT grant_id, event_type, occurred_at, ip FROM (
       SELECT grant_id, event_type, occurred_at, ip, row_number() OVER (PARTITION BY grant_id ORDER BY id DESC) AS n
       FROM audit_events WHERE account_id = $1 AND grant_id = ANY($2::text[])) recent
     WHERE n <= $3 ORDER BY occurred_at DESC`,
    [accountId, grantIds, perGrant],
  );
  for (const row of r.rows) {
    const list = byGrant.get(row.grant_id) ?? [];
    list.push({ grantId: row.grant_id, eventType: row.event_type, occurredAt: row.occurred_at, ip: row.ip });
    byGrant.set(row.grant_id, list);
  }
  return byGrant;
}

/** The account a live grant belongs to (the page checks it is the signed-in user's). */
export async function ownerOfLiveGrant(db: Db, grantId: string): Promise<string | undefined> {
  const r = await db.query<{ account_id: string }>('SELECT account_id FROM grants WHERE id = $1 AND revoked_at IS NULL', [grantId]);
  return r.rows[0]?.account_id;
}
