/**
 * The token vault: agentauth holds each user's upstream tokens for a connection and hands an
 * agent only a short-lived upstream access token, only for a user who connected that service and
 * an agent the connection allows (docs/connected-accounts.md). The refresh token never leaves.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog } from '../audit/log.ts';
import { AgentauthError, TemporarilyUnavailable } from '../errors.ts';
import type { Outbound } from '../net/outbound.ts';
import type { Db } from '../storage/db.ts';
import {
  connectionSecret,
  deleteConnectedAccount,
  findConnection,
  markBroken,
  openConnectedAccount,
  recordRefresh,
  recordUse,
  storeConnectedAccount,
  type Connection,
  type UpstreamTokens,
} from './store.ts';
import { exchangeCode, refresh, revoke, UpstreamError, type UpstreamClient } from './upstream.ts';

export interface VaultDeps {
  db: Db;
  /** KEY_ENCRYPTION_KEY: seals client secrets and tokens at rest. */
  kek: Buffer;
  outbound: Outbound;
  audit: AuditLog;
}

/** An access token with less left than this is refreshed before it is handed out. */
const FRESH_FOR_MS = 60_000;

const fresh = (tokens: UpstreamTokens, now: number) => tokens.expiresAt === null || tokens.expiresAt - now > FRESH_FOR_MS;

async function upstreamClient(deps: VaultDeps, connection: Connection): Promise<UpstreamClient> {
  return { clientId: connection.clientId, clientSecret: await connectionSecret(deps.db, deps.kek, connection.id) };
}

/** What a connect flow carries from its start to its callback (in a signed, http-only cookie). */
export interface PendingConnect {
  connection: string;
  state: string;
  verifier: string;
  /** The agentauth session that started it: the callback must arrive in the same one. */
  session: string;
}

/** The upstream authorization request: code flow, PKCE S256, a fresh state. */
export function startConnect(connection: Connection, sessionId: string, redirectUri: string): { url: string; pending: PendingConnect } {
  const pending = {
    connection: connection.id,
    state: randomBytes(16).toString('base64url'),
    verifier: randomBytes(32).toString('base64url'),
    session: sessionId,
  };
  const url = new URL(connection.authorizationEndpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: connection.clientId,
    redirect_uri: redirectUri,
    scope: connection.scopes.join(' '),
    state: pending.state,
    code_challenge: createHash('sha256').update(pending.verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  return { url: url.toString(), pending };
}

const refused = (description: string) => new AgentauthError(400, 'invalid_request', description);

/**
 * The callback: the state and session must be the ones the flow started with, the response must
 * come from the connection's issuer (RFC 9207 §2.4: `iss` when present must match, and must be
 * present when the provider says it sends it), then the code is exchanged and the tokens sealed.
 */
export async function finishConnect(
  deps: VaultDeps,
  pending: PendingConnect | undefined,
  params: { state?: string; code?: string; iss?: string; error?: string },
  who: { accountId: string; sessionId: string },
  redirectUri: string,
): Promise<Connection> {
  if (!pending || params.state !== pending.state || pending.session !== who.sessionId) {
    throw refused('This connect link has expired or was opened in another browser. Start again from your account page.');
  }
  const connection = await findConnection(deps.db, pending.connection);
  if (!connection) throw refused('That service is no longer offered.');
  if (params.iss !== undefined ? params.iss !== connection.issuer : connection.issParameterSupported) {
    throw refused(`The answer did not come from ${connection.displayName}. Start again from your account page.`);
  }
  if (params.error !== undefined) throw new AgentauthError(400, 'access_denied', `Connecting ${connection.displayName} was cancelled.`);
  if (!params.code) throw refused('The answer carried no authorization code.');
  let result: Awaited<ReturnType<typeof exchangeCode>>;
  try {
    result = await exchangeCode(deps.outbound, connection.tokenEndpoint, await upstreamClient(deps, connection), params.code, pending.verifier, redirectUri);
  } catch (err) {
    if (!(err instanceof UpstreamError)) throw err;
    throw new AgentauthError(502, 'upstream_error', `${connection.displayName} refused to connect (${err.upstream}). Try again.`, { expose: true });
  }
  const scopes = result.scope ?? connection.scopes;
  await storeConnectedAccount(deps.db, deps.kek, who.accountId, connection.id, result.tokens, scopes);
  await deps.audit.record({
    type: 'connection.connected',
    actor: { type: 'user', id: who.accountId },
    accountId: who.accountId,
    scopes,
    details: { connection: connection.id },
  });
  return connection;
}

/** Revokes upstream (RFC 7009, where offered) and forgets the tokens; a failed revocation does not keep them. */
export async function disconnect(deps: VaultDeps, accountId: string, connectionId: string, log: (err: unknown) => void): Promise<boolean> {
  const connection = await findConnection(deps.db, connectionId);
  const held = connection && (await openConnectedAccount(deps.db, deps.kek, accountId, connectionId, false));
  if (!connection || !held) return false;
  if (connection.revocationEndpoint) {
    const token = held.tokens.refreshToken ?? held.tokens.accessToken;
    const hint = held.tokens.refreshToken ? 'refresh_token' : 'access_token';
    // Outside the transaction's connection: an upstream call holds no database connection.
    await deps.db
      .withoutConnection(async () => revoke(deps.outbound, connection.revocationEndpoint!, await upstreamClient(deps, connection), token, hint))
      .catch(log);
  }
  await deleteConnectedAccount(deps.db, accountId, connectionId);
  await deps.audit.record({ type: 'connection.disconnected', actor: { type: 'user', id: accountId }, accountId, details: { connection: connectionId } });
  return true;
}

export interface UpstreamAccess {
  accessToken: string;
  tokenType: string;
  /** Seconds left; undefined when the provider did not say. */
  expiresIn: number | undefined;
  scopes: string[];
  connection: Connection;
}

/** The refusal of an exchange for a connection, in RFC 8693 / RFC 6749 terms. */
const notGranted = (description: string) => new AgentauthError(400, 'invalid_grant', description);

/**
 * An upstream access token for an agent acting for a user: the connection must allow the agent
 * and the user must have connected it. A token close to expiry is refreshed first, once however
 * many agents and instances ask at once: the row is locked (FOR UPDATE) and read again, so those
 * that waited find the new token. The rotated tokens are written in the caller's transaction,
 * which commits before the answer is sent (a crash before then loses the answer, not the token).
 * An upstream invalid_grant marks the connection broken for the user to reconnect.
 */
export async function upstreamAccessToken(
  deps: VaultDeps,
  request: { accountId: string; connectionId: string; clientId: string; grantId?: string | null; chain?: string[] },
): Promise<UpstreamAccess> {
  const { db, kek } = deps;
  const connection = await findConnection(db, request.connectionId);
  if (!connection) throw new AgentauthError(400, 'invalid_target', `no connection ${request.connectionId}`);
  if (!connection.agents.includes(request.clientId)) throw new AgentauthError(400, 'unauthorized_client', `this agent may not use ${connection.displayName}`);

  const issue = async (tokens: UpstreamTokens, scopes: string[]): Promise<UpstreamAccess> => {
    await recordUse(db, request.accountId, connection.id, request.clientId);
    await deps.audit.record({
      type: 'connection.token_issued',
      actor: { type: 'client', id: request.clientId },
      clientId: request.clientId,
      accountId: request.accountId,
      grantId: request.grantId ?? null,
      scopes,
      // "alice, via Reporting Agent (via …), obtained a Drive token": the whole chain when delegated.
      details: { connection: connection.id, ...(request.chain && request.chain.length > 1 ? { chain: request.chain } : {}) },
    });
    const expiresIn = tokens.expiresAt === null ? undefined : Math.max(0, Math.floor((tokens.expiresAt - Date.now()) / 1000));
    return { accessToken: tokens.accessToken, tokenType: tokens.tokenType ?? 'Bearer', expiresIn, scopes, connection };
  };

  const held = await openConnectedAccount(db, kek, request.accountId, connection.id, false);
  if (!held) throw notGranted(`the user has not connected ${connection.displayName}`);
  if (held.status === 'broken') throw notGranted(`the user must reconnect ${connection.displayName}`);
  if (fresh(held.tokens, Date.now())) return issue(held.tokens, held.scopes);

  return db.tx(async () => {
    const locked = await openConnectedAccount(db, kek, request.accountId, connection.id, true);
    if (!locked) throw notGranted(`the user has not connected ${connection.displayName}`);
    if (locked.status === 'broken') throw notGranted(`the user must reconnect ${connection.displayName}`);
    if (fresh(locked.tokens, Date.now())) return issue(locked.tokens, locked.scopes); // another request refreshed it
    const broken = async (why: string) => {
      await markBroken(db, request.accountId, connection.id);
      await deps.audit.record({
        type: 'connection.broken',
        actor: { type: 'system' },
        accountId: request.accountId,
        details: { connection: connection.id, why },
      });
      db.mustCommit(); // the refusal is answered, and the broken mark must stay
      return notGranted(`the user must reconnect ${connection.displayName}`);
    };
    if (!locked.tokens.refreshToken) throw await broken('expired without a refresh token');
    let refreshed: Awaited<ReturnType<typeof refresh>>;
    try {
      refreshed = await refresh(deps.outbound, connection.tokenEndpoint, await upstreamClient(deps, connection), locked.tokens.refreshToken);
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      if (err.upstream === 'invalid_grant') throw await broken('the provider refused the refresh token');
      throw new TemporarilyUnavailable(`${connection.displayName} could not be reached; try again shortly.`, { cause: err });
    }
    await recordRefresh(db, kek, request.accountId, connection.id, refreshed.tokens);
    return issue(refreshed.tokens, locked.scopes);
  });
}
