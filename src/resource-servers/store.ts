/** The resource_servers table. */
import type { Db } from '../storage/db.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';

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
  identifier: r.identifier,
  scopes: r.scopes,
  tokenFormat: r.token_format,
  accessTokenTtl: r.access_token_ttl,
  introspectorClient: r.introspector_client,
  eventDeliveryUri: r.event_delivery_uri,
});
const COLUMNS = 'identifier, scopes, token_format, access_token_ttl, introspector_client, event_delivery_uri';

/** Inserts a resource server; false when the identifier is taken. */
export async function insertResourceServer(db: Db, rs: ResourceServer): Promise<boolean> {
  return db.tx(async () => {
    const r = await db.query(`INSERT INTO resource_servers (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (identifier) DO NOTHING`, [
      rs.identifier,
      rs.scopes,
      rs.tokenFormat,
      rs.accessTokenTtl,
      rs.introspectorClient,
      rs.eventDeliveryUri,
    ]);
    // Instances cache resource servers per configuration generation (see resourceServerCache).
    if (r.rowCount === 1) await bumpConfigGeneration(db);
    return r.rowCount === 1;
  });
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
  return db.tx(async () => {
    const deleted = (await db.query('DELETE FROM resource_servers WHERE identifier = $1', [identifier])).rowCount === 1;
    if (deleted) await bumpConfigGeneration(db);
    return deleted;
  });
}

/**
 * Registered resource servers as one provider build sees them: every change bumps the
 * configuration generation, which rebuilds the provider (and so this cache) on every instance
 * before its next token request, as for keys and scopes. Unknown identifiers are not remembered,
 * so made-up `resource` values cannot grow it.
 */
export function resourceServerCache(db: Db) {
  const known = new Map<string, ResourceServer>();
  const find = async (identifier: string): Promise<ResourceServer | undefined> => {
    const cached = known.get(identifier);
    if (cached) return cached;
    const found = await findResourceServer(db, identifier);
    if (found) known.set(identifier, found);
    return found;
  };
  return {
    find,
    /** Whether this client introspects for a resource server that is one of these audiences. */
    async introspectsFor(clientId: string, audiences: string[]): Promise<boolean> {
      for (const audience of audiences) if ((await find(audience))?.introspectorClient === clientId) return true;
      return false;
    },
  };
}
