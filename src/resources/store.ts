/** The resource_servers table. */
import type { Db } from '../storage/db.ts';

export interface ResourceServer {
  identifier: string;
  scopes: string[];
  tokenFormat: 'opaque' | 'jwt';
  accessTokenTtl: number;
  introspectorClient: string | null;
  eventDeliveryUri: string | null;
}

interface Row {
  identifier: string;
  scopes: string[];
  token_format: 'opaque' | 'jwt';
  access_token_ttl: number;
  introspector_client: string | null;
  event_delivery_uri: string | null;
}

const toServer = (r: Row): ResourceServer => ({
  identifier: r.identifier, scopes: r.scopes, tokenFormat: r.token_format, accessTokenTtl: r.access_token_ttl, introspectorClient: r.introspector_client,
  eventDeliveryUri: r.event_delivery_uri,
});
const COLUMNS = 'identifier, scopes, token_format, access_token_ttl, introspector_client, event_delivery_uri';

/** Inserts a resource server; false when the identifier is taken. */
export async function insertResourceServer(db: Db, rs: ResourceServer): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO resource_servers (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (identifier) DO NOTHING`,
    [rs.identifier, rs.scopes, rs.tokenFormat, rs.accessTokenTtl, rs.introspectorClient, rs.eventDeliveryUri],
  );
  return r.rowCount === 1;
}

export async function findResourceServer(db: Db, identifier: string): Promise<ResourceServer | undefined> {
  const r = await db.query<Row>(`SELECT ${COLUMNS} FROM resource_servers WHERE identifier = $1`, [identifier]);
  return r.rows[0] && toServer(r.rows[0]);
}

export async function listResourceServers(db: Db): Promise<ResourceServer[]> {
  const r = await db.query<Row>(`SELECT ${COLUMNS} FROM resource_servers ORDER BY identifier`);
  return r.rows.map(toServer);
}

export async function deleteResourceServer(db: Db, identifier: string): Promise<boolean> {
  return (await db.query('DELETE FROM resource_servers WHERE identifier = $1', [identifier])).rowCount === 1;
}

/** Whether this client introspects for any of these audiences. */
export async function introspectsFor(db: Db, clientId: string, audiences: string[]): Promise<boolean> {
  if (audiences.length === 0) return false;
  const r = await db.query('SELECT 1 FROM resource_servers WHERE introspector_client = $1 AND identifier = ANY($2::text[]) LIMIT 1', [clientId, audiences]);
  return r.rowCount === 1;
}
