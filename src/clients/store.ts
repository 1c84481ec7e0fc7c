/** The clients table: one row per agent, its oidc-provider metadata as JSON. */
import type { Db } from '../storage/db.ts';

export type ClientMetadata = Record<string, unknown> & { client_id: string };

/**
 * How a client came to be: an admin, RFC 7591 with an initial access token, open registration,
 * or a Client ID Metadata Document (its client_id is the https URL of its metadata).
 */
export type RegistrationKind = 'admin' | 'token' | 'open' | 'metadata_document';

/** Clients nobody vetted: the consent and account pages flag them as unverified. */
export const isSelfRegistered = (kind: RegistrationKind | null | undefined) => kind === 'open' || kind === 'metadata_document';

export interface ClientRecord {
  metadata: ClientMetadata;
  registration: RegistrationKind;
  tokenRateLimit: number | null;
  refreshRetryWindow: number | null;
  createdAt: Date;
  disabledAt: Date | null;
}

interface ClientRow {
  metadata: ClientMetadata;
  registration: RegistrationKind;
  token_rate_limit: number | null;
  refresh_retry_window: number | null;
  created_at: Date;
  disabled_at: Date | null;
}

const toRecord = (row: ClientRow): ClientRecord => ({
  metadata: row.metadata,
  registration: row.registration,
  tokenRateLimit: row.token_rate_limit,
  refreshRetryWindow: row.refresh_retry_window,
  createdAt: row.created_at,
  disabledAt: row.disabled_at,
});
const CLIENT_COLUMNS = 'metadata, registration, token_rate_limit, refresh_retry_window, created_at, disabled_at';

/**
 * Inserts the client unless one with its id exists; false when one did (or a concurrent
 * transaction inserted it first: the unique index makes this wait for that one's outcome).
 */
export async function insertClientIfAbsent(db: Db, metadata: ClientMetadata, registration: RegistrationKind): Promise<boolean> {
  const r = await db.query('INSERT INTO clients (client_id, metadata, registration) VALUES ($1, $2, $3) ON CONFLICT (client_id) DO NOTHING', [
    metadata.client_id,
    metadata,
    registration,
  ]);
  return r.rowCount === 1;
}

/** A client that may authenticate now (not disabled): its metadata and its own token rate limit. */
export async function findActiveClient(
  db: Db,
  clientId: string,
): Promise<{ metadata: ClientMetadata; tokenRateLimit: number | null; registration: RegistrationKind } | undefined> {
  const r = await db.query<{ metadata: ClientMetadata; token_rate_limit: number | null; registration: RegistrationKind }>(
    'SELECT metadata, token_rate_limit, registration FROM clients WHERE client_id = $1 AND disabled_at IS NULL',
    [clientId],
  );
  const row = r.rows[0];
  return row && { metadata: row.metadata, tokenRateLimit: row.token_rate_limit, registration: row.registration };
}

/** Sets the client's own refresh retry window (seconds, 0 = strict); null returns it to the default. */
export async function setRefreshRetryWindow(db: Db, clientId: string, seconds: number | null): Promise<void> {
  await db.query('UPDATE clients SET refresh_retry_window = $2, updated_at = now() WHERE client_id = $1', [clientId, seconds]);
}

/** Sets the client's own token endpoint limit (per minute); null returns it to the default. */
export async function setTokenRateLimit(db: Db, clientId: string, perMinute: number | null): Promise<void> {
  await db.query('UPDATE clients SET token_rate_limit = $2, updated_at = now() WHERE client_id = $1', [clientId, perMinute]);
}

export async function findClient(db: Db, clientId: string): Promise<ClientRecord | undefined> {
  const r = await db.query<ClientRow>(`SELECT ${CLIENT_COLUMNS} FROM clients WHERE client_id = $1`, [clientId]);
  return r.rows[0] && toRecord(r.rows[0]);
}

export async function listClients(db: Db): Promise<ClientRecord[]> {
  const r = await db.query<ClientRow>(`SELECT ${CLIENT_COLUMNS} FROM clients ORDER BY created_at, client_id`);
  return r.rows.map(toRecord);
}

export async function updateClientMetadata(db: Db, metadata: ClientMetadata): Promise<boolean> {
  const r = await db.query('UPDATE clients SET metadata = $2, updated_at = now() WHERE client_id = $1', [metadata.client_id, metadata]);
  return r.rowCount === 1;
}

/** Marks a client disabled; false when it does not exist or already was. */
export async function disableClient(db: Db, clientId: string): Promise<boolean> {
  const r = await db.query('UPDATE clients SET disabled_at = now(), updated_at = now() WHERE client_id = $1 AND disabled_at IS NULL', [clientId]);
  return r.rowCount === 1;
}

export async function deleteClient(db: Db, clientId: string): Promise<boolean> {
  return (await db.query('DELETE FROM clients WHERE client_id = $1', [clientId])).rowCount === 1;
}
