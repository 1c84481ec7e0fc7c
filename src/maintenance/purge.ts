/**
 * The periodic clean-up: expired credentials, single-use markers, dead grants, registration
 * tokens, delivered revocation events and audit events past retention.
 *
 * Every instance runs it on a timer, but only one at a time does the work (a session advisory
 * lock; the others skip that round). Each table is purged in bounded batches, one short
 * transaction each, so no statement comes near the statement timeout however large the backlog
 * and the work done so far stays done if the process stops; progress goes to the log.
 */
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.ts';
import { purgeExpiredRegistrationTokens } from '../clients/registration-tokens.ts';
import { purgeDeliveredEvents } from '../revocation/outbox.ts';
import { purgeApprovalRequests } from '../approvals/store.ts';
import { purgeBatches } from '../artifacts/store.ts';
import type { Db } from '../storage/db.ts';

const LOCK = 'agentauth:maintenance';
export const DEFAULT_BATCH_SIZE = 5_000;
/** A progress line at most this often per table. */
const PROGRESS_EVERY_MS = 10_000;

export interface MaintenanceDeps {
  db: Db;
  log: Logger;
  audit: AuditLog;
  /** How long a revoked grant's tombstone outlives it (its tokens' longest lifetime). */
  tombstoneGraceSeconds: number;
  /** Days audit events are kept; 0 keeps them forever. */
  auditRetentionDays: number;
  batchSize?: number;
}

/** Rows deleted per table; undefined when another instance holds the lock. */
export type PurgeReport = Record<string, number>;

export async function runMaintenance(deps: MaintenanceDeps): Promise<PurgeReport | undefined> {
  const { db, log } = deps;
  const size = deps.batchSize ?? DEFAULT_BATCH_SIZE;
  const tasks: [string, () => Promise<number>][] = [
    ['oidc_artifacts', () => purgeBatches.oidc_artifacts(db, size)],
    ['replay_detection', () => purgeBatches.replay_detection(db, size)],
    ['revoked_grants', () => purgeBatches.revoked_grants(db, size, deps.tombstoneGraceSeconds)],
    ['expired_grants', () => purgeBatches.expired_grants(db, size)],
    ['registration_tokens', () => purgeExpiredRegistrationTokens(db, size)],
    ['revocation_events', () => purgeDeliveredEvents(db, size)],
    ['approval_requests', () => purgeApprovalRequests(db, size)],
  ];
  if (deps.auditRetentionDays > 0) {
    const cutoff = new Date(Date.now() - deps.auditRetentionDays * 24 * 3600 * 1000);
    tasks.push(['audit_events', async () => (await deps.audit.purge(cutoff, { type: 'system' }, size))?.purged ?? 0]);
  }
  return db.exclusive(LOCK, async () => {
    const report: PurgeReport = {};
    for (const [table, batch] of tasks) {
      // A failing table is logged and skipped: the others still get purged.
      try {
        report[table] = await drain(table, batch, size, log);
      } catch (err) {
        log.warn({ err, table }, 'purge failed');
      }
    }
    return report;
  });
}

/** Runs `batch` (each in its own transaction) until one deletes less than a full batch. */
async function drain(table: string, batch: () => Promise<number>, size: number, log: Logger): Promise<number> {
  let total = 0;
  let lastReport = Date.now();
  for (;;) {
    const deleted = await batch();
    total += deleted;
    // The audit purge goes by whole seals, so a batch is "full" when it deleted anything at all.
    if (deleted === 0 || (table !== 'audit_events' && deleted < size)) break;
    if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
      log.info({ table, deleted: total }, 'purge in progress');
      lastReport = Date.now();
    }
  }
  if (total > 0) log.info({ table, deleted: total }, 'purged');
  return total;
}
