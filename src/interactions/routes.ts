/**
 * Our login and consent pages. oidc-provider sends the browser here with an interaction; each
 * POST checks its CSRF token, does one thing, and answers 303 back into the provider.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import type { HashQueue } from '../users/hash-queue.ts';
import { accountNamed, passwordOpens, PASSWORD_ACR } from '../users/login.ts';
import type { SignInGuard } from '../users/sign-in-guard.ts';
import type { AuditLog } from '../audit/log.ts';
import { findAccountById } from '../users/store.ts';
import { InvalidRequest, TooManyRequests } from '../errors.ts';
import { clientNames, delegatesOf } from '../delegation/store.ts';
import { seeOther, type FormGuard } from '../http/forms.ts';
import { requestContext } from '../http/request-context.ts';
import type { Views } from '../http/views.ts';
import { findClient, isSelfRegistered } from '../clients/store.ts';
import { describePermission, oidcScopeAllowed, permissionLabel, permissionsOf, type Permission } from '../grants/permissions.ts';
import { findScopes } from '../scopes/store.ts';
import { metrics } from '../metrics/metrics.ts';
import type { Db } from '../storage/db.ts';
import { sentencesFor, type DetailsType } from '../authorization-details/types.ts';

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

const BUILT_IN_SCOPE_DESCRIPTIONS: Record<string, string> = {
  openid: 'Know your account identifier',
};

export interface InteractionDeps {
  provider: Provider;
  db: Db;
  views: Views;
  audit: AuditLog;
  forms: FormGuard;
  /** Failed sign-ins allowed per account, address and pair. */
  signInGuard: SignInGuard;
  /** Bounds the password checks in progress. */
  hashQueue: HashQueue;
  /** Registered authorization details types, for the sentences the user reads. */
  detailsTypes: ReadonlyMap<string, DetailsType>;
}

const expired = () => new InvalidRequest('This sign-in request has expired or was opened in another browser. Go back to the app and start again.');

export function interactionRoutes({ provider, db, views, audit, forms, signInGuard, hashQueue, detailsTypes }: InteractionDeps): Router {
  const router = new Router({ prefix: '/interaction/:uid' });

  /** The interaction bound to this browser's cookie, which must be the one in the URL. */
  async function interactionFor(ctx: Context): Promise<Interaction> {
    let details: Interaction;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch {
      throw expired();
    }
    if (details.uid !== ctx.params.uid) throw expired();
    return details;
  }

  /** The form of a POST, refused unless it carries this interaction's CSRF token. */
  const checkedForm = (ctx: Context, uid: string) => forms.checkedForm(ctx, `interaction:${uid}`);

  async function finish(ctx: Context, result: InteractionResults): Promise<void> {
    const url = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    seeOther(ctx, url);
  }

  async function clientName(clientId: string): Promise<string> {
    const client = await provider.Client.find(clientId);
    return client?.clientName ?? clientId;
  }

  router.get('/', async (ctx) => {
    const details = await interactionFor(ctx);
    const clientId = String(details.params.client_id);
    const common = { uid: details.uid, csrf: forms.tokenFor(`interaction:${details.uid}`), clientName: await clientName(clientId), clientId };
    if (details.prompt.name === 'login') {
      const error = ctx.query.error === 'credentials' ? 'The username or password is not right.' : undefined;
      ctx.body = views.render('login', { ...common, error });
      return;
    }
    if (details.prompt.name === 'consent') {
      const account = details.session?.accountId ? await findAccountById(db, details.session.accountId) : undefined;
      if (!account) throw expired();
      // One checkbox per permission: a scope asked for a resource server is asked once, per server.
      const asked = requestedPermissions(details);
      const known = new Map((await findScopes(db, [...new Set(asked.map((p) => p.scope))])).map((s) => [s.name, s.description]));
      const describe = (name: string) => known.get(name) ?? BUILT_IN_SCOPE_DESCRIPTIONS[name] ?? name;
      const scopes = asked.map((p) => ({ name: permissionLabel(p), description: describePermission(p, describe) }));
      // An agent that registered itself (open registration, a metadata document) is flagged, with where it will send you.
      const unverified = isSelfRegistered((await findClient(db, clientId))?.registration);
      // RFC 9396: each authorization detail as the sentence its type registered ("Pay 420 USD to ACME").
      const actions = sentencesFor(requestedDetails(details), detailsTypes);
      // Who this agent may hand parts of it to (RFC 8693 delegation, an operator's setting).
      const names = await clientNames(db, await delegatesOf(db, clientId));
      const delegates = [...names.values()];
      ctx.body = views.render('consent', {
        ...common,
        username: account.username,
        scopes,
        actions,
        unverified,
        delegates,
        redirectHost: hostOf(details.params.redirect_uri),
      });
      return;
    }
    throw new InvalidRequest('This sign-in step is not supported.');
  });

  router.post('/login', async (ctx) => {
    const details = await interactionFor(ctx);
    const form = await checkedForm(ctx, details.uid);
    if (details.prompt.name !== 'login') throw expired();
    const username = form.get('username') ?? '';
    const clientId = String(details.params.client_id);
    // Password guessing: the failure is counted before the password is checked (and before the
    // database is asked anything), so of a burst of parallel guesses only the limit go further.
    const subject = signInGuard.nameHash(username);
    const admission = await signInGuard.admit(subject, ctx.ip);
    if (!admission.allowed) {
      metrics.rateLimitRefused('login_failure');
      throw new TooManyRequests(`Too many failed sign-ins. Try again in ${Math.ceil(admission.retryAfter / 60)} minutes.`, admission.retryAfter);
    }
    const account = await accountNamed(db, username);
    let opened: boolean;
    try {
      opened = await passwordOpens(db, hashQueue, account, form.get('password') ?? '');
    } catch (err) {
      await admission.release(); // not checked (the hash queue was full, say): not a failed guess
      throw err;
    }
    if (!opened || !account) {
      requestContext()?.log.info({ interaction: details.uid }, 'login failed');
      // The account when the name exists; otherwise a keyed hash: a password typed into the
      // name field must not be stored.
      await audit.record({
        type: 'login.failed',
        actor: { type: 'user', ...(account ? { id: account.id } : {}) },
        clientId,
        outcome: 'failure',
        ...(account ? { accountId: account.id } : {}),
        details: account ? { account: account.id } : { username_hash: subject },
      });
      seeOther(ctx, `/interaction/${details.uid}?error=credentials`);
      return;
    }
    await admission.release();
    await signInGuard.succeeded(subject, ctx.ip);
    const accountId = account.id;
    await audit.record({ type: 'login.succeeded', actor: { type: 'user', id: accountId }, clientId, accountId });
    // A password was typed just now: the sign-in's acr, amr (RFC 8176) and time (max_age, RFC 9470).
    await finish(ctx, { login: { accountId, acr: PASSWORD_ACR, amr: ['pwd'], ts: Math.floor(Date.now() / 1000) } });
  });

  router.post('/consent', async (ctx) => {
    const details = await interactionFor(ctx);
    const form = await checkedForm(ctx, details.uid);
    if (details.prompt.name !== 'consent' || !details.session?.accountId) throw expired();
    const accountId = details.session.accountId;
    const clientId = String(details.params.client_id);
    const asked = requestedPermissions(details);
    if (form.get('decision') !== 'allow') {
      await audit.record({
        type: 'consent.denied',
        actor: { type: 'user', id: accountId },
        clientId,
        accountId,
        details: { requested: asked.map(permissionLabel), ...detailsForAudit(details) },
      });
      await finish(ctx, { error: 'access_denied', error_description: 'the user denied the request' });
      return;
    }
    const ticked = new Set(form.getAll('scope'));
    const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ?? new provider.Grant({ accountId, clientId });
    const allowed = asked.filter((p) => ticked.has(permissionLabel(p)));
    const declined = asked.filter((p) => !ticked.has(permissionLabel(p)));
    // The OIDC twin of each permission follows it, so a token with or without resource= agrees.
    const oidcAsked = requestedScopes(details);
    const oidcGranted = oidcAsked.filter((s) => oidcScopeAllowed(s, allowed));
    const oidcRefused = oidcAsked.filter((s) => !oidcScopeAllowed(s, allowed));
    if (oidcGranted.length) grant.addOIDCScope(oidcGranted.join(' '));
    // Recording refusals stops oidc-provider from asking again for what the user unticked.
    if (oidcRefused.length) grant.rejectOIDCScope(oidcRefused.join(' '));
    for (const resource of new Set(asked.flatMap((p) => (p.resource ? [p.resource] : [])))) {
      const yes = allowed.filter((p) => p.resource === resource).map((p) => p.scope);
      const no = declined.filter((p) => p.resource === resource).map((p) => p.scope);
      if (yes.length) grant.addResourceScope(resource, yes.join(' '));
      if (no.length) grant.rejectResourceScope(resource, no.join(' '));
    }
    const granted = allowed.map(permissionLabel);
    const refused = declined.map(permissionLabel);
    // Authorization details are approved as a whole (the user saw each as a sentence): RFC 9396 §7.
    for (const detail of requestedDetails(details) ?? []) grant.addRar(detail as { type: string });
    const missingClaims = details.prompt.details.missingOIDCClaims;
    if (Array.isArray(missingClaims) && missingClaims.length) grant.addOIDCClaims(missingClaims as string[]);
    const grantId = await grant.save();
    await audit.record({
      type: 'consent.granted',
      actor: { type: 'user', id: accountId },
      clientId,
      accountId,
      grantId,
      scopes: granted,
      details: { granted, refused, ...detailsForAudit(details) },
    });
    await finish(ctx, { consent: { grantId } });
  });

  router.post('/abort', async (ctx) => {
    const details = await interactionFor(ctx);
    await checkedForm(ctx, details.uid);
    await finish(ctx, { error: 'access_denied', error_description: 'the user cancelled the request' });
  });

  return router;
}

/** The authorization details this consent asks about (oidc-provider's rar_prompt), if any. */
function requestedDetails(details: Interaction): Record<string, unknown>[] | undefined {
  const rar = details.prompt.details.rar;
  return Array.isArray(rar) && rar.length ? (rar as Record<string, unknown>[]) : undefined;
}

const detailsForAudit = (details: Interaction) => {
  const rar = requestedDetails(details);
  return rar ? { authorization_details: rar } : {};
};

/** Scopes asked for per resource server (RFC 8707) that no grant covers yet. */
function requestedResourceScopes(details: Interaction): Record<string, string[]> {
  const missing = details.prompt.details.missingResourceScopes;
  return missing && typeof missing === 'object' ? (missing as Record<string, string[]>) : {};
}

/** What this consent asks for, one permission per scope and server (grants/permissions.ts). */
const requestedPermissions = (details: Interaction): Permission[] => permissionsOf(requestedScopes(details), requestedResourceScopes(details));

/** The scopes this consent asks for: those the request names that no grant covers yet. */
function requestedScopes(details: Interaction): string[] {
  const missing = details.prompt.details.missingOIDCScope;
  return Array.isArray(missing) ? (missing as string[]) : [];
}

function hostOf(uri: unknown): string | undefined {
  if (typeof uri !== 'string') return undefined;
  try {
    return new URL(uri).host;
  } catch {
    return undefined;
  }
}
