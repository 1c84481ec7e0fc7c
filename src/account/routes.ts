/**
 * /account: the connected agents page. Signing in is an ordinary authorization request from
 * agentauth's own client, so it is the same login (and the same browser session) as any agent's
 * flow. Every change is a POST with a CSRF token bound to the session, behind a confirmation
 * page, answered with 303; another user's grant is a 404.
 */
import { createHash, randomBytes } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { findAccountById } from '../users/store.ts';
import type { AuditLog } from '../audit/log.ts';
import { isSelfRegistered } from '../clients/store.ts';
import { revokeGrant } from '../revocation/revoke.ts';
import { AgentauthError, Forbidden, InvalidRequest, NotFound } from '../errors.ts';
import { seeOther, type FormGuard } from '../http/forms.ts';
import type { Views } from '../http/views.ts';
import { ACCOUNT_CALLBACK_PATH, ACCOUNT_CLIENT_ID } from '../oauth/provider.ts';
import { timeWords } from '../http/time-words.ts';
import { describePermission } from '../grants/permissions.ts';
import { findScopes } from '../scopes/store.ts';
import type { Db } from '../storage/db.ts';
import { connectionsView, mountConnectionRoutes } from '../connections/account-routes.ts';
import type { VaultDeps } from '../connections/vault.ts';
import { connectedAgentsFor, ownerOfLiveGrant, recentActivity, type ConnectedAgent } from './store.ts';

const STATE_COOKIE = 'agentauth.account_state';
const GRANT_ID = /^[A-Za-z0-9_-]{1,128}$/;

const EVENT_WORDS: Record<string, string> = {
  'consent.granted': 'You allowed access',
  'authorization_code.issued': 'Signed in through you',
  'token.issued': 'Got an access token',
  'refresh_token.rotated': 'Refreshed its access',
  'refresh_token.retried': 'Retried a refresh',
  'refresh_token.reuse_detected': 'Reused an old token (blocked)',
  'token.revoked': 'Gave a token back',
  'token.introspected': 'Had a token checked',
  'grant.revoked': 'Access revoked',
  'token_exchange.refused': 'Was refused a delegated token',
};

export interface AccountDeps {
  provider: Provider;
  issuer: string;
  db: Db;
  views: Views;
  audit: AuditLog;
  forms: FormGuard;
  /** Connected accounts: sealing, the upstream calls, the audit trail. */
  vault: VaultDeps;
}

export function accountRoutes({ provider, issuer, db, views, audit, forms, vault }: AccountDeps): Router {
  const router = new Router();
  const csrfFor = (sessionId: string) => forms.tokenFor(`account:${sessionId}`);

  interface SignedIn {
    accountId: string;
    sessionId: string;
    session: Awaited<ReturnType<Provider['Session']['get']>>;
  }

  async function signedIn(ctx: Context): Promise<SignedIn | undefined> {
    const session = await provider.Session.get(ctx as never);
    const accountId = session.accountId;
    if (!accountId || !session.jti) return undefined;
    const account = await findAccountById(db, accountId);
    return account && !account.disabled ? { accountId, sessionId: session.jti, session } : undefined;
  }

  /** Not signed in: start an authorization request from our own client; the login page follows. */
  function startSignIn(ctx: Context): void {
    const state = randomBytes(16).toString('base64url');
    const verifier = randomBytes(32).toString('base64url');
    ctx.cookies.set(STATE_COOKIE, state, {
      signed: true,
      httpOnly: true,
      sameSite: 'lax',
      path: ACCOUNT_CALLBACK_PATH,
      maxAge: 10 * 60 * 1000,
      overwrite: true,
    });
    const params = new URLSearchParams({
      client_id: ACCOUNT_CLIENT_ID,
      response_type: 'code',
      scope: 'openid',
      redirect_uri: `${issuer}${ACCOUNT_CALLBACK_PATH}`,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    });
    seeOther(ctx, `/auth?${params}`);
  }

  const checkedForm = (ctx: Context, who: SignedIn) => forms.checkedForm(ctx, `account:${who.sessionId}`);

  /** The signed-in user's own live grant, or 404 (also for another user's: no oracle). */
  async function ownGrant(ctx: Context, who: SignedIn): Promise<string> {
    const grantId = ctx.params.grantId ?? '';
    if (!GRANT_ID.test(grantId) || (await ownerOfLiveGrant(db, grantId)) !== who.accountId) {
      throw new NotFound('There is no such connected agent.');
    }
    return grantId;
  }

  async function viewOf(agents: ConnectedAgent[], accountId: string) {
    const descriptions = new Map(
      (await findScopes(db, [...new Set(agents.flatMap((a) => a.permissions.map((p) => p.scope)))])).map((s) => [s.name, s.description]),
    );
    const activity = await recentActivity(
      db,
      accountId,
      agents.map((a) => a.grantId),
    );
    return agents.map((a) => ({
      grantId: a.grantId,
      name: typeof a.metadata?.client_name === 'string' ? a.metadata.client_name : a.clientId,
      clientId: a.clientId,
      logo: httpsOnly(a.metadata?.logo_uri),
      homepage: httpsOnly(a.metadata?.client_uri),
      verified: !isSelfRegistered(a.registration),
      scopes: a.permissions.map((p) => describePermission(p, (scope) => descriptions.get(scope) ?? scope)),
      grantedAt: timeWords(a.grantedAt),
      lastUsedAt: a.lastUsedAt ? timeWords(a.lastUsedAt) : undefined,
      liveTokens: a.liveTokens,
      activity: (activity.get(a.grantId) ?? []).map((e) => ({ what: EVENT_WORDS[e.eventType] ?? e.eventType, when: timeWords(e.occurredAt), ip: e.ip })),
      parentGrantId: a.parentGrantId,
    }));
  }

  /** The agents the user allowed, each with the agents it handed parts of that to, nested. */
  async function agentTree(accountId: string) {
    type View = Awaited<ReturnType<typeof viewOf>>[number] & { delegates: View[] };
    const views = (await viewOf(await connectedAgentsFor(db, accountId, ACCOUNT_CLIENT_ID), accountId)).map((v): View => ({ ...v, delegates: [] }));
    const byGrant = new Map(views.map((v) => [v.grantId, v]));
    const roots: View[] = [];
    for (const view of views) {
      const parent = view.parentGrantId ? byGrant.get(view.parentGrantId) : undefined;
      if (parent) parent.delegates.push(view);
      else if (!view.parentGrantId) roots.push(view);
    }
    return { roots, all: views };
  }

  router.get('/account', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return startSignIn(ctx);
    const account = await findAccountById(db, who.accountId);
    const agents = (await agentTree(who.accountId)).roots;
    const connections = await connectionsView(vault, who.accountId);
    ctx.body = views.render('account', { username: account?.username, agents, connections, csrf: csrfFor(who.sessionId), notice: noticeOf(ctx.query.done) });
  });

  router.get(ACCOUNT_CALLBACK_PATH, async (ctx) => {
    const expected = ctx.cookies.get(STATE_COOKIE, { signed: true });
    ctx.cookies.set(STATE_COOKIE, null, { path: ACCOUNT_CALLBACK_PATH });
    if (!expected || ctx.query.state !== expected) throw new InvalidRequest('This sign-in link has expired. Open your connected agents again.');
    if (typeof ctx.query.error === 'string') throw new AgentauthError(400, 'access_denied', 'Signing in was cancelled.');
    seeOther(ctx, '/account');
  });

  router.get('/account/agents/:grantId/revoke', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return startSignIn(ctx);
    const grantId = await ownGrant(ctx, who);
    const agent = (await agentTree(who.accountId)).all.find((a) => a.grantId === grantId);
    ctx.body = views.render('confirm', { action: `/account/agents/${grantId}/revoke`, csrf: csrfFor(who.sessionId), agents: agent ? [agent] : [], all: false });
  });

  router.post('/account/agents/:grantId/revoke', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) throw new Forbidden('invalid_request', 'Sign in again to manage your connected agents.');
    await checkedForm(ctx, who);
    const grantId = await ownGrant(ctx, who);
    await revokeGrant(db, audit, grantId, { type: 'user', id: who.accountId }, 'user_revoked');
    seeOther(ctx, '/account?done=revoked');
  });

  router.get('/account/revoke-all', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return startSignIn(ctx);
    const agents = (await agentTree(who.accountId)).roots;
    ctx.body = views.render('confirm', { action: '/account/revoke-all', csrf: csrfFor(who.sessionId), agents, all: true });
  });

  router.post('/account/revoke-all', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) throw new Forbidden('invalid_request', 'Sign in again to manage your connected agents.');
    await checkedForm(ctx, who);
    // Delegations first die with their parents (revocation/revoke.ts); revoking them again is a no-op.
    for (const agent of await connectedAgentsFor(db, who.accountId, ACCOUNT_CLIENT_ID)) {
      await revokeGrant(db, audit, agent.grantId, { type: 'user', id: who.accountId }, 'user_revoked_all');
    }
    seeOther(ctx, '/account?done=revoked-all');
  });

  router.post('/account/sign-out', async (ctx) => {
    const who = await signedIn(ctx);
    if (who) {
      await checkedForm(ctx, who);
      await who.session.destroy();
    }
    ctx.cookies.set(provider.cookieName('session'), null);
    seeOther(ctx, '/account/signed-out');
  });

  mountConnectionRoutes(router, { signedIn, startSignIn, checkedForm }, vault, issuer);

  router.get('/account/signed-out', (ctx) => {
    ctx.body = views.render('signed-out', {});
  });

  return router;
}

function httpsOnly(uri: unknown): string | undefined {
  if (typeof uri !== 'string') return undefined;
  try {
    return new URL(uri).protocol === 'https:' ? uri : undefined;
  } catch {
    return undefined;
  }
}

function noticeOf(done: unknown): string | undefined {
  if (done === 'revoked') return 'Access revoked. Every token of that agent has stopped working.';
  if (done === 'revoked-all') return 'Access revoked for every agent. All their tokens have stopped working.';
  if (done === 'connected') return 'Connected. Agents you allow can now act there for you, without ever seeing your password.';
  if (done === 'disconnected') return 'Disconnected. agentauth revoked its access there and forgot its tokens.';
  return undefined;
}
