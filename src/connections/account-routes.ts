/**
 * The user's side of connected accounts on /account: connect a service (an authorization code
 * flow with PKCE at the upstream provider, its state bound to this browser session), see what is
 * connected and which agent last used it, and disconnect (revoked upstream, then forgotten).
 */
import type Router from '@koa/router';
import type { Context } from 'koa';
import { findClient } from '../clients/store.ts';
import { InvalidRequest, NotFound } from '../errors.ts';
import { seeOther } from '../http/forms.ts';
import { requestContext } from '../http/request-context.ts';
import { timeWords } from '../http/time-words.ts';
import { connectedAccountsOf, findConnection, listConnections } from './store.ts';
import { disconnect, finishConnect, startConnect, type PendingConnect, type VaultDeps } from './vault.ts';

export const CONNECT_CALLBACK_PATH = '/account/connections/callback';
const CONNECT_COOKIE = 'agentauth.connect';
const CONNECTION_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** What the account page lends these routes: who is signed in, and its CSRF-checked forms. */
export interface AccountSession {
  signedIn(ctx: Context): Promise<{ accountId: string; sessionId: string } | undefined>;
  startSignIn(ctx: Context): void;
  checkedForm(ctx: Context, who: { accountId: string; sessionId: string }): Promise<unknown>;
}

/** The connections as the account page lists them for one user. */
export async function connectionsView(deps: VaultDeps, accountId: string) {
  const [connections, connected] = await Promise.all([listConnections(deps.db), connectedAccountsOf(deps.db, accountId)]);
  const byId = new Map(connected.map((c) => [c.connectionId, c]));
  return Promise.all(
    connections.map(async (c) => {
      const held = byId.get(c.id);
      const lastAgent = held?.lastUsedBy ? await findClient(deps.db, held.lastUsedBy) : undefined;
      return {
        id: c.id,
        name: c.displayName,
        connected: held !== undefined,
        broken: held?.status === 'broken',
        scopes: held?.scopes ?? [],
        connectedAt: held && timeWords(held.connectedAt),
        lastUsedAt: held?.lastUsedAt ? timeWords(held.lastUsedAt) : undefined,
        lastUsedBy: typeof lastAgent?.metadata.client_name === 'string' ? lastAgent.metadata.client_name : held?.lastUsedBy,
      };
    }),
  );
}

function readPending(ctx: Context): PendingConnect | undefined {
  const raw = ctx.cookies.get(CONNECT_COOKIE, { signed: true });
  ctx.cookies.set(CONNECT_COOKIE, null, { path: CONNECT_CALLBACK_PATH });
  if (!raw) return undefined;
  try {
    return JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as PendingConnect;
  } catch {
    return undefined;
  }
}

const queryString = (v: unknown) => (typeof v === 'string' ? v : undefined);

export function mountConnectionRoutes(router: Router, session: AccountSession, deps: VaultDeps, issuer: string): void {
  const redirectUri = `${issuer}${CONNECT_CALLBACK_PATH}`;

  async function connectionNamed(ctx: Context) {
    const id = ctx.params.id ?? '';
    const connection = CONNECTION_ID.test(id) ? await findConnection(deps.db, id) : undefined;
    if (!connection) throw new NotFound('There is no such service to connect.');
    return connection;
  }

  router.get('/account/connections/:id/connect', async (ctx) => {
    const who = await session.signedIn(ctx);
    if (!who) return session.startSignIn(ctx);
    const { url, pending } = startConnect(await connectionNamed(ctx), who.sessionId, redirectUri);
    ctx.cookies.set(CONNECT_COOKIE, Buffer.from(JSON.stringify(pending)).toString('base64url'), {
      signed: true,
      httpOnly: true,
      sameSite: 'lax',
      path: CONNECT_CALLBACK_PATH,
      maxAge: 10 * 60 * 1000,
      overwrite: true,
    });
    seeOther(ctx, url);
  });

  router.get(CONNECT_CALLBACK_PATH, async (ctx) => {
    const pending = readPending(ctx);
    const who = await session.signedIn(ctx);
    if (!who) throw new InvalidRequest('Sign in again, then connect the service from your account page.');
    const params = {
      state: queryString(ctx.query.state),
      code: queryString(ctx.query.code),
      iss: queryString(ctx.query.iss),
      error: queryString(ctx.query.error),
    };
    await finishConnect(deps, pending, params, who, redirectUri);
    seeOther(ctx, '/account?done=connected');
  });

  router.post('/account/connections/:id/disconnect', async (ctx) => {
    const who = await session.signedIn(ctx);
    if (!who) throw new InvalidRequest('Sign in again to manage your connected accounts.');
    await session.checkedForm(ctx, who);
    const connection = await connectionNamed(ctx);
    const log = (err: unknown) => requestContext()?.log.warn({ err, connection: connection.id }, 'upstream revocation failed; the tokens are forgotten anyway');
    if (!(await disconnect(deps, who.accountId, connection.id, log))) throw new NotFound('That service is not connected.');
    seeOther(ctx, '/account?done=disconnected');
  });
}
