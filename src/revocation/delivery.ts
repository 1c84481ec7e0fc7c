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
import { leaseDueEvents, markDelivered, markFailed, type PendingEvent } from './outbox.ts';

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
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'secevent+jwt' })
    .setIssuer(issuer)
    .setJti(event.jti)
    .setIssuedAt()
    .setAudience(event.audience)
    .sign(await importJWK(key.privateJwk as JWK, 'ES256'));
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
  event.kind === 'backchannel_logout' || event.audience === event.clientId ? 'client' : 'resource_server';

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
      // The grant's tombstone still names its parent (it outlives every retry of its events).
      const chain = (await grantChain(deps.db, event.grantId)).map((link) => link.clientId);
      const status = await post(deps.outbound, event.subscriberUri, await buildSecurityEventToken(event, deps.issuer, key, chain));
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

/** Runs deliveries every `intervalMs` until stopped. */
export function startDeliveryWorker(deps: DeliveryDeps, intervalMs = 500): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    deliverDueEvents(deps)
      .catch((err: unknown) => deps.log.warn({ err }, 'revocation event delivery pass failed'))
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
