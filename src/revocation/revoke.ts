/**
 * The one revocation service. `tombstoneAndNotify` is the one way a grant dies: tombstone and
 * credentials (grants/store.ts), then the revocation events queued in the same transaction
 * (outbox.ts), so they go out if and only if the revocation commits. On top of it: one grant on
 * someone's behalf (the user, an admin), everything a client holds (disabled or deleted client),
 * everything a user granted (disabled user), each audited with its reason; tokens that belong to
 * no grant (client credentials) are deleted too.
 *
 * A grant's delegations (grants made by token exchange from its tokens, RFC 8693) die with it,
 * each the same way, so every party of the chain hears of it and no exchanged token survives.
 */
import type { AuditInput, AuditLog } from '../audit/log.ts';
import { metrics } from '../metrics/metrics.ts';
import { countArtifactsOfClient, deleteArtifactsOfClient } from '../artifacts/store.ts';
import type { Db } from '../storage/db.ts';
import { liveChildGrantIds, liveGrantIdsOfAccount, liveGrantIdsOfClient, tombstoneGrant, type RevokedGrant } from '../grants/store.ts';
import { enqueueRevocationEvents } from './outbox.ts';

/** Grants revoked because the grant they were delegated from was: they name it as the cause. */
export const PARENT_REVOKED = 'delegating_grant_revoked';

/**
 * Kills the grant and queues its revocation events, then its delegations, depth first; returns
 * the grant (with the delegations it took along) only from the call that revoked it.
 */
export async function tombstoneAndNotify(db: Db, grantId: string, reason: string): Promise<(RevokedGrant & { delegations: string[] }) | undefined> {
  return db.tx(async () => {
    const revoked = await tombstoneGrant(db, grantId);
    if (!revoked) return undefined;
    await enqueueRevocationEvents(db, revoked, reason);
    // Read after the parent's row lock: an exchange that made a child first has committed it.
    const delegations: string[] = [];
    for (const child of await liveChildGrantIds(db, grantId)) {
      const gone = await tombstoneAndNotify(db, child, PARENT_REVOKED);
      if (gone) delegations.push(child, ...gone.delegations);
    }
    return { ...revoked, delegations };
  });
}

export async function revokeClientAccess(
  db: Db,
  audit: AuditLog,
  clientId: string,
  actor: AuditInput['actor'],
  reason: string,
): Promise<{ grants: number; tokens: number }> {
  return db.tx(async () => {
    const tokens = await countArtifactsOfClient(db, clientId);
    let grants = 0;
    for (const grantId of await liveGrantIdsOfClient(db, clientId)) {
      if (await revokeGrant(db, audit, grantId, actor, reason)) grants += 1;
    }
    await deleteArtifactsOfClient(db, clientId);
    return { grants, tokens };
  });
}

/**
 * Everything a user granted, to any agent, when an admin disables the user: each grant the one
 * way (tombstone, tokens, revocation events, audit), so their access tokens stop introspecting
 * and their agents hear of it, exactly as when a client is disabled.
 */
export async function revokeAccountAccess(db: Db, audit: AuditLog, accountId: string, actor: AuditInput['actor'], reason: string): Promise<{ grants: number }> {
  return db.tx(async () => {
    let grants = 0;
    for (const grantId of await liveGrantIdsOfAccount(db, accountId)) {
      if (await revokeGrant(db, audit, grantId, actor, reason)) grants += 1;
    }
    return { grants };
  });
}

/**
 * Revokes one grant on someone's behalf (the user on the connected agents page, an admin):
 * tombstone and tokens in the current transaction, audited with its reason. False when it was
 * already revoked.
 */
export async function revokeGrant(db: Db, audit: AuditLog, grantId: string, actor: AuditInput['actor'], reason: string): Promise<boolean> {
  return db.tx(async () => {
    const revoked = await tombstoneAndNotify(db, grantId, reason);
    if (!revoked) return false;
    await audit.record({
      type: 'grant.revoked',
      actor,
      clientId: revoked.clientId,
      accountId: revoked.accountId,
      grantId,
      details: { reason, ...(revoked.delegations.length ? { delegations: revoked.delegations } : {}) },
    });
    metrics.grantRevoked(reason);
    return true;
  });
}
