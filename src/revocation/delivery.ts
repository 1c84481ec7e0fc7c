/**
 * Pushes queued revocation events as signed Security Event Tokens (RFC 8417) by RFC 8935 push
 * delivery. A worker leases due events (so several instances never send the same one at the same
 * time, and a crashed instance's lease simply runs out), posts each through the outbound module
 * (the same address policy as jwks_uri), and retries failures with exponential backoff. Delivery is at least once; every event
 * keeps its jti, so receivers drop duplicates.
 */
import { importJWK, SignJWT, type JWK } from 'jose';
import type { Logger } from 'pino';
import { metrics, type SubscriberKind } from '../metrics/metrics.ts';
import { loadSigningKeys } from '../keys/signing-keys.ts';
import type { Outbound } from '../net/outbound.ts';
// Our event type is defined once, by the resource-server helper that receives it (docs/connected-agents.md).
import { GRANT_REVOKED_EVENT } from '../resource-server/events.ts';
import { grantChain } from '../grants/store.ts';
import type { Db } from '../storage/db.ts';
import { unseal } from '../keys/sealed.ts';
import { leaseDueEvents, markDelivered, markFailed, pingAad, type PendingEvent } from './outbox.ts';

/** The event the product receives when a user has an approval request waiting (docs/human-approval.md). */
export const APPROVAL_REQUESTED_EVENT = 'https://agentauth.dev/secevent/approval-requested';

const LEASE_SECONDS = 30;
const TIMEOUT_MS = 5_000;
const MAX_BACKOFF_SECONDS = 300;

export interface DeliveryDeps {
  db: Db;
  issuer: string;
  keyEncryptionKey: Buffer;
  log: Logger;
  outbound: Outbound;
  /** Sends an OIDC back-channel logout token for the user to the client (oidc-provider builds it). */
  backchannelLogout(clientId: string, sub: string): Promise<void>;
}

/** Seconds before retry n (1-based): 1, 2, 4 … up to 5 minutes, with jitter. */
export const backoffSeconds = (attempt: number) => Math.min(MAX_BACKOFF_SECONDS, 2 ** Math.max(0, attempt - 1)) * (0.8 + Math.random() * 0.4);

/**
 * The Security Event Token (RFC 8417) for one event, signed with the current signing key by jose.
 * A delegation's event names its chain (RFC 8693: the first agent first, the event's client last).
 */
export async function buildSecurityEventToken(
  event: PendingEvent,
  issuer: string,
  key: { kid: string; privateJwk: Record<string, unknown> },
  chain: string[] = [],
): Promise<string> {
  const claims = {
    events: {
      [GRANT_REVOKED_EVENT]: {
        grant_id: event.grantId,
        client_id: event.clientId,
        sub: event.accountId,
        reason: event.reason,
        revoked_at: Math.floor(event.revokedAt.getTime() / 1000),
        ...(chain.length > 1 ? { delegation_chain: chain } : {}),
      },
    },
  };
  return signSecurityEvent(claims, event, issuer, key);
}

type SigningKey = { kid: string; privateJwk: Record<string, unknown> };

/** Every event agentauth pushes is one Security Event Token (RFC 8417), signed with jose here. */
async function signSecurityEvent(claims: { events: Record<string, unknown> }, event: PendingEvent, issuer: string, key: SigningKey): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'secevent+jwt' })
    .setIssuer(issuer)
    .setJti(event.jti)
    .setIssuedAt()
    .setAudience(event.audience)
    .sign(await importJWK(key.privateJwk as JWK, 'ES256'));
}

/** The signed approval-requested event for the product: what the user is asked, and by whom. */
export function buildApprovalEvent(event: PendingEvent, issuer: string, key: SigningKey): Promise<string> {
  return signSecurityEvent({ events: { [APPROVAL_REQUESTED_EVENT]: event.payload ?? {} } }, event, issuer, key);
}

/** CIBA Core §10.2: POST {auth_req_id} with the agent's client_notification_token as bearer. */
async function ping(deps: DeliveryDeps, event: PendingEvent): Promise<number> {
  const { auth_req_id, client_notification_token } = JSON.parse(unseal(deps.keyEncryptionKey, String(event.payload?.sealed ?? ''), pingAad(event.jti))) as {
    auth_req_id: string;
    client_notification_token: string;
  };
  const answer = await deps.outbound.request(event.subscriberUri, {
    method: 'POST',
    body: JSON.stringify({ auth_req_id }),
    timeoutMs: TIMEOUT_MS,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${client_notification_token}` },
  });
  return answer.status;
}

/** The revoked grant's delegation chain: its tombstone still names its parent (it outlives every retry of its events). */
async function chainOf(db: Db, event: PendingEvent): Promise<string[]> {
  return event.grantId ? (await grantChain(db, event.grantId)).map((link) => link.clientId) : [];
}

/** POSTs a SET; resolves to the status code. */
async function post(outbound: Outbound, uri: string, body: string): Promise<number> {
  const answer = await outbound.request(uri, {
    method: 'POST',
    body,
    timeoutMs: TIMEOUT_MS,
    headers: { 'content-type': 'application/secevent+jwt', accept: 'application/json' },
  });
  return answer.status;
}

/** Whom an event goes to, for metrics: the agent (its SET or back-channel logout) or a resource server (its identifier is the SET's aud). */
const subscriberOf = (event: PendingEvent): SubscriberKind =>
  event.kind === 'approval_webhook' ? 'product' : event.kind !== 'set' || event.audience === event.clientId ? 'client' : 'resource_server';

/** One pass: deliver what is due. Returns how many were delivered. */
export async function deliverDueEvents(deps: DeliveryDeps, limit = 20): Promise<number> {
  const events = await leaseDueEvents(deps.db, limit, LEASE_SECONDS);
  if (events.length === 0) return 0;
  const [key] = await loadSigningKeys(deps.db, deps.keyEncryptionKey);
  if (!key) return 0;
  let delivered = 0;
  for (const event of events) {
    try {
      if (event.kind === 'backchannel_logout') {
        await deps.backchannelLogout(event.clientId, event.accountId);
        await markDelivered(deps.db, event.jti);
        metrics.delivered(subscriberOf(event));
        delivered += 1;
        continue;
      }
      const status =
        event.kind === 'ciba_ping'
          ? await ping(deps, event)
          : event.kind === 'approval_webhook'
            ? await post(deps.outbound, event.subscriberUri, await buildApprovalEvent(event, deps.issuer, key))
            : await post(deps.outbound, event.subscriberUri, await buildSecurityEventToken(event, deps.issuer, key, await chainOf(deps.db, event)));
      if (status >= 200 && status < 300) {
        await markDelivered(deps.db, event.jti);
        metrics.delivered(subscriberOf(event));
        delivered += 1;
        continue;
      }
      metrics.deliveryFailed(subscriberOf(event));
      await markFailed(deps.db, event.jti, `HTTP ${status}`, backoffSeconds(event.attempts + 1));
    } catch (err) {
      metrics.deliveryFailed(subscriberOf(event));
      await markFailed(deps.db, event.jti, (err as Error).message, backoffSeconds(event.attempts + 1));
      deps.log.info({ jti: event.jti, client: event.clientId, attempts: event.attempts + 1 }, 'revocation event delivery failed; will retry');
    }
  }
  return delivered;
}

/**
 * Runs deliveries every `intervalMs` until stopped. `nudge` runs a pass at once (after a commit
 * that queued something a person waits for: a CIBA ping), or right after the pass under way.
 */
export function startDeliveryWorker(deps: DeliveryDeps, intervalMs = 500): { stop(): void; nudge(): void } {
  let running = false;
  let again = false;
  const pass = () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    deliverDueEvents(deps)
      .catch((err: unknown) => deps.log.warn({ err }, 'revocation event delivery pass failed'))
      .finally(() => {
        running = false;
        if (again) {
          again = false;
          pass();
        }
      });
  };
  const timer = setInterval(pass, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer), nudge: pass };
}
