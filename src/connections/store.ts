/**
 * The connections and connected_accounts tables. Client secrets and upstream tokens are only
 * ever stored sealed, with associated data naming the row they belong to; they leave this
 * module opened only for the upstream call that needs them (src/connections/upstream.ts).
 */
import { seal, unseal } from '../keys/sealed.ts';
import type { Db } from '../storage/db.ts';

export interface Connection {
  id: string;
  displayName: string;
  issuer: string | null;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint: string | null;
  issParameterSupported: boolean;
  clientId: string;
  scopes: string[];
  /** Client ids of the agents that may obtain this connection's tokens. */
  agents: string[];
}

/** What the upstream token endpoint gave, as kept (sealed) for one user and connection. */
export interface UpstreamTokens {
  accessToken: string;
  /** As the provider named it (RFC 6749 §7.1); Bearer when it did not say. */
  tokenType?: string;
  refreshToken: string | null;
  /** When the access token expires (ms since the epoch); null when the provider did not say. */
  expiresAt: number | null;
}

export interface ConnectedAccount {
  accountId: string;
  connectionId: string;
  scopes: string[];
  status: 'active' | 'broken';
  connectedAt: Date;
  lastUsedAt: Date | null;
  lastUsedBy: string | null;
}

interface ConnectionRow {
  id: string;
  display_name: string;
  issuer: string | null;
  authorization_endpoint: string;
  token_endpoint: string;
  revocation_endpoint: string | null;
  iss_parameter_supported: boolean;
  client_id: string;
  scopes: string;
  agents: string[];
}

const CONNECTION_COLUMNS =
  'id, display_name, issuer, authorization_endpoint, token_endpoint, revocation_endpoint, iss_parameter_supported, client_id, scopes, agents';

const toConnection = (r: ConnectionRow): Connection => ({
  id: r.id,
  displayName: r.display_name,
  issuer: r.issuer,
  authorizationEndpoint: r.authorization_endpoint,
  tokenEndpoint: r.token_endpoint,
  revocationEndpoint: r.revocation_endpoint,
  issParameterSupported: r.iss_parameter_supported,
  clientId: r.client_id,
  scopes: r.scopes.split(' ').filter(Boolean),
  agents: r.agents,
});

/** Associated data: a sealed value opens only in the row it was sealed for. */
const secretAad = (connectionId: string) => `connection-secret:${connectionId}`;
const tokensAad = (accountId: string, connectionId: string) => `connected-account:${accountId}:${connectionId}`;

/** Inserts a connection; false when the id is taken. */
export async function insertConnection(db: Db, kek: Buffer, c: Connection, clientSecret: string): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO connections (${CONNECTION_COLUMNS}, client_secret_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (id) DO NOTHING`,
    [
      c.id,
      c.displayName,
      c.issuer,
      c.authorizationEndpoint,
      c.tokenEndpoint,
      c.revocationEndpoint,
      c.issParameterSupported,
      c.clientId,
      c.scopes.join(' '),
      c.agents,
      seal(kek, clientSecret, secretAad(c.id)),
    ],
  );
  return r.rowCount === 1;
}

export async function findConnection(db: Db, id: string): Promise<Connection | undefined> {
  const r = await db.query<ConnectionRow>(`SELECT ${CONNECTION_COLUMNS} FROM connections WHERE id = $1`, [id]);
  return r.rows[0] && toConnection(r.rows[0]);
}

export async function listConnections(db: Db): Promise<Connection[]> {
  const r = await db.query<ConnectionRow>(`SELECT ${CONNECTION_COLUMNS} FROM connections ORDER BY id`);
  return r.rows.map(toConnection);
}

/** Deleting a connection deletes every user's tokens for it (ON DELETE CASCADE). */
export async function deleteConnection(db: Db, id: string): Promise<boolean> {
  const r = await db.query('DELETE FROM connections WHERE id = $1', [id]);
  return r.rowCount === 1;
}

export async function setConnectionAgents(db: Db, id: string, agents: string[]): Promise<boolean> {
  const r = await db.query('UPDATE connections SET agents = $2 WHERE id = $1', [id, agents]);
  return r.rowCount === 1;
}

export async function connectionSecret(db: Db, kek: Buffer, id: string): Promise<string> {
  const r = await db.query<{ client_secret_sealed: string }>('SELECT client_secret_sealed FROM connections WHERE id = $1', [id]);
  const sealed = r.rows[0]?.client_secret_sealed;
  if (!sealed) throw new Error(`connection ${id} has no secret`);
  return unseal(kek, sealed, secretAad(id));
}

interface AccountRow {
  account_id: string;
  connection_id: string;
  scopes: string;
  status: 'active' | 'broken';
  connected_at: Date;
  last_used_at: Date | null;
  last_used_by: string | null;
}

const ACCOUNT_COLUMNS = 'account_id, connection_id, scopes, status, connected_at, last_used_at, last_used_by';

const toConnectedAccount = (r: AccountRow): ConnectedAccount => ({
  accountId: r.account_id,
  connectionId: r.connection_id,
  scopes: r.scopes.split(' ').filter(Boolean),
  status: r.status,
  connectedAt: r.connected_at,
  lastUsedAt: r.last_used_at,
  lastUsedBy: r.last_used_by,
});

/** Stores (or replaces, on reconnecting) a user's tokens for a connection, sealed to that pair. */
export async function storeConnectedAccount(
  db: Db,
  kek: Buffer,
  accountId: string,
  connectionId: string,
  tokens: UpstreamTokens,
  scopes: string[],
): Promise<void> {
  await db.query(
    `INSERT INTO connected_accounts (account_id, connection_id, tokens_sealed, scopes, access_expires_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (account_id, connection_id) DO UPDATE SET tokens_sealed = EXCLUDED.tokens_sealed, scopes = EXCLUDED.scopes,
       access_expires_at = EXCLUDED.access_expires_at, status = 'active', connected_at = now(), refreshed_at = NULL`,
    [accountId, connectionId, seal(kek, JSON.stringify(tokens), tokensAad(accountId, connectionId)), scopes.join(' '), expiry(tokens)],
  );
}

const expiry = (tokens: UpstreamTokens) => (tokens.expiresAt === null ? null : new Date(tokens.expiresAt));

export async function connectedAccountsOf(db: Db, accountId: string): Promise<ConnectedAccount[]> {
  const r = await db.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM connected_accounts WHERE account_id = $1 ORDER BY connection_id`, [accountId]);
  return r.rows.map(toConnectedAccount);
}

/**
 * A user's tokens for a connection, opened; with `lock`, the row stays locked (FOR UPDATE) until
 * the caller's transaction ends, so one refresh runs at a time however many ask at once.
 */
export async function openConnectedAccount(
  db: Db,
  kek: Buffer,
  accountId: string,
  connectionId: string,
  lock: boolean,
): Promise<(ConnectedAccount & { tokens: UpstreamTokens }) | undefined> {
  const r = await db.query<AccountRow & { tokens_sealed: string }>(
    `SELECT ${ACCOUNT_COLUMNS}, tokens_sealed FROM connected_accounts WHERE account_id = $1 AND connection_id = $2 ${lock ? 'FOR UPDATE' : ''}`,
    [accountId, connectionId],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  const tokens = JSON.parse(unseal(kek, row.tokens_sealed, tokensAad(accountId, connectionId))) as UpstreamTokens;
  return { ...toConnectedAccount(row), tokens };
}

/** Keeps rotated tokens (sealed) after an upstream refresh. */
export async function recordRefresh(db: Db, kek: Buffer, accountId: string, connectionId: string, tokens: UpstreamTokens): Promise<void> {
  await db.query(
    'UPDATE connected_accounts SET tokens_sealed = $3, access_expires_at = $4, refreshed_at = now() WHERE account_id = $1 AND connection_id = $2',
    [accountId, connectionId, seal(kek, JSON.stringify(tokens), tokensAad(accountId, connectionId)), expiry(tokens)],
  );
}

export async function markBroken(db: Db, accountId: string, connectionId: string): Promise<void> {
  await db.query("UPDATE connected_accounts SET status = 'broken' WHERE account_id = $1 AND connection_id = $2", [accountId, connectionId]);
}

export async function recordUse(db: Db, accountId: string, connectionId: string, clientId: string): Promise<void> {
  await db.query('UPDATE connected_accounts SET last_used_at = now(), last_used_by = $3 WHERE account_id = $1 AND connection_id = $2', [
    accountId,
    connectionId,
    clientId,
  ]);
}

export async function deleteConnectedAccount(db: Db, accountId: string, connectionId: string): Promise<boolean> {
  const r = await db.query('DELETE FROM connected_accounts WHERE account_id = $1 AND connection_id = $2', [accountId, connectionId]);
  return r.rowCount === 1;
}
