/**
 * Human approval of an agent's request (OpenID CIBA Core 1.0): the hooks oidc-provider calls on
 * the backchannel authentication endpoint, and the user's decision from /account. The request
 * itself is oidc-provider's BackchannelAuthenticationRequest; what the user reads is a row in
 * approval_requests (store.ts), written in the same transaction as the request.
 *
 * After a decision the agent learns of it by polling the token endpoint, or, in ping mode, by a
 * POST to its notification endpoint from the outbox (the same lease, retries and backoff as
 * revocation events). The product hears of every new request by a signed webhook, also queued.
 */
import { randomBytes } from 'node:crypto';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { Account, Client, KoaContextWithOIDC } from 'oidc-provider';
import type { AuditLog } from '../audit/log.ts';
import { parsedDetails } from '../authorization-details/types.ts';
import { seal, unseal } from '../keys/sealed.ts';
import { enqueueApprovalWebhook, enqueueCibaPing } from '../revocation/outbox.ts';
import type { Db } from '../storage/db.ts';
import { findAccountByUsername } from '../users/store.ts';
import { decide, insertApprovalRequest, type ApprovalRequest, type Decision } from './store.ts';

/** CIBA Core §7.1: a binding message is short enough to read on a phone and compare on a screen. */
const BINDING_MESSAGE_MAX = 100;
const PRINTABLE = /^[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]+$/u;

export interface ApprovalDeps {
  db: Db;
  audit: AuditLog;
  keyEncryptionKey: Buffer;
  /** Seconds an agent waits between polls (the `interval` of the answer; slow_down below it). */
  pollIntervalSeconds: number;
  /** The product's endpoint for approval-request events, if the deployment set one. */
  webhookUrl: string | undefined;
  /** Starts an outbox pass now; call once what was queued has committed. */
  nudgeDelivery(): void;
}

type BackchannelRequest = InstanceType<Provider['BackchannelAuthenticationRequest']>;

const sealAad = (approvalId: string) => `approval:${approvalId}`;

/** What the user is asked, as the audit trail and the webhook carry it. */
const askedOf = (r: Pick<ApprovalRequest, 'bindingMessage' | 'scope' | 'authorizationDetails'>) => ({
  binding_message: r.bindingMessage,
  scope: r.scope,
  ...(r.authorizationDetails ? { authorization_details: r.authorizationDetails } : {}),
});

/** The `features.ciba` hooks (oidc-provider calls them in this order on each request). */
export function cibaHooks(deps: ApprovalDeps) {
  const { db, audit, keyEncryptionKey } = deps;
  return {
    /** login_hint is the username (an agent acts for a user it knows by name). */
    async processLoginHint(_ctx: KoaContextWithOIDC, loginHint?: string): Promise<string | undefined> {
      if (loginHint === undefined) return undefined;
      if (loginHint.length > 200) return undefined;
      const account = await findAccountByUsername(db, loginHint);
      return account && !account.disabled ? account.id : undefined;
    },
    async processLoginHintToken(): Promise<string | undefined> {
      throw new errors.InvalidRequest('login_hint_token is not supported; send the username as login_hint');
    },
    async validateBindingMessage(_ctx: KoaContextWithOIDC, message: string | undefined): Promise<void> {
      if (message === undefined) return;
      if (message.length > BINDING_MESSAGE_MAX || !PRINTABLE.test(message)) {
        throw new errors.InvalidBindingMessage(`binding_message must be 1-${BINDING_MESSAGE_MAX} printable characters`);
      }
    },
    async validateRequestContext(): Promise<void> {},
    /** No user codes (metadata says backchannel_user_code_parameter_supported: false). */
    async verifyUserCode(_ctx: KoaContextWithOIDC, _account: Account, userCode: string | undefined): Promise<void> {
      if (userCode !== undefined) throw new errors.InvalidRequest('user_code is not supported');
    },
    /** Called after the request is saved: put it in front of the user, and tell the product. */
    async triggerAuthenticationDevice(ctx: KoaContextWithOIDC, request: BackchannelRequest, account: Account, client: Client): Promise<void> {
      const id = randomBytes(16).toString('base64url');
      const params = request.params as Record<string, unknown>;
      const row = {
        id,
        authReqIdSealed: seal(keyEncryptionKey, request.jti, sealAad(id)),
        accountId: account.accountId,
        clientId: client.clientId,
        bindingMessage: typeof params.binding_message === 'string' ? params.binding_message : null,
        scope: String(request.scope ?? ''),
        authorizationDetails: parsedDetails(params.authorization_details) ?? null,
        // The answer's expires_in (oidc-provider's ttl.BackchannelAuthenticationRequest).
        expiresAt: new Date(Date.now() + Number((ctx.body as { expires_in: number }).expires_in) * 1000),
      };
      await insertApprovalRequest(db, row);
      await audit.record({
        type: 'approval.requested',
        actor: { type: 'client', id: client.clientId },
        clientId: client.clientId,
        accountId: account.accountId,
        scopes: row.scope,
        details: { approval_id: id, ...askedOf(row), expires_at: row.expiresAt.toISOString() },
      });
      if (deps.webhookUrl) {
        await enqueueApprovalWebhook(db, deps.webhookUrl, {
          accountId: account.accountId,
          clientId: client.clientId,
          claims: {
            approval_id: id,
            client_id: client.clientId,
            client_name: client.clientName ?? null,
            sub: account.accountId,
            ...askedOf(row),
            expires_at: Math.floor(row.expiresAt.getTime() / 1000),
          },
        });
      }
      // CIBA Core §7.3: the least wait between polls.
      (ctx.body as Record<string, unknown>).interval = deps.pollIntervalSeconds;
    },
  };
}

export class ApprovalGone extends Error {}

/**
 * The user's answer to one of their waiting requests. Approving creates the grant for exactly
 * what was asked (its scopes, resource servers and authorization details) and hands it to the
 * request; denying leaves access_denied for the agent's next poll. Throws ApprovalGone when the
 * request is not this user's, was answered already, or expired.
 */
export async function answerApproval(
  provider: Provider,
  deps: ApprovalDeps,
  answer: { approvalId: string; accountId: string; decision: Decision; authTime?: number; acr?: string },
): Promise<ApprovalRequest> {
  const row = await decide(deps.db, answer.approvalId, answer.accountId, answer.decision);
  if (!row) throw new ApprovalGone();
  const authReqId = unseal(deps.keyEncryptionKey, row.authReqIdSealed, sealAad(row.id));
  const request = await provider.BackchannelAuthenticationRequest.find(authReqId);
  if (!request || request.accountId !== answer.accountId) throw new ApprovalGone();
  if (answer.decision === 'approved') {
    const grant = new provider.Grant({ accountId: row.accountId, clientId: row.clientId });
    grant.addOIDCScope(row.scope);
    for (const resource of [request.resource ?? []].flat()) grant.addResourceScope(resource, row.scope);
    for (const detail of row.authorizationDetails ?? []) grant.addRar(detail as { type: string });
    const grantId = await grant.save();
    Object.assign(request, {
      grantId,
      authTime: answer.authTime,
      acr: answer.acr,
      rar: row.authorizationDetails ?? undefined,
    });
  } else {
    Object.assign(request, { error: 'access_denied', errorDescription: 'the user denied the request' });
  }
  await request.save();
  await deps.audit.record({
    type: answer.decision === 'approved' ? 'approval.approved' : 'approval.denied',
    actor: { type: 'user', id: row.accountId },
    clientId: row.clientId,
    accountId: row.accountId,
    grantId: (request as { grantId?: string }).grantId ?? null,
    scopes: row.scope,
    details: { approval_id: row.id, ...askedOf(row) },
  });
  const client = await provider.Client.find(row.clientId);
  const notificationToken = (request.params as Record<string, unknown>).client_notification_token;
  if (client?.backchannelTokenDeliveryMode === 'ping' && client.backchannelClientNotificationEndpoint && typeof notificationToken === 'string') {
    await enqueueCibaPing(deps.db, deps.keyEncryptionKey, {
      clientId: row.clientId,
      accountId: row.accountId,
      endpoint: client.backchannelClientNotificationEndpoint,
      authReqId,
      notificationToken,
    });
  }
  return row;
}
