/**
 * The audit log: "user X, via agent Z, did Y". Events recorded during a unit of work are
 * appended to the chain just before it commits, so a committed change always has its rows and
 * a rolled-back one never does. Request metadata (IP, user agent, request id) is added here.
 */
import { requestContext } from '../http/request-context.ts';
import type { Db } from '../storage/db.ts';
import { chainHash } from './chain.ts';
import { appendChained, fieldsOf, findEvents, purgeBefore, readAnchor, readChainPage, type ActorType, type AuditEvent, type AuditFilter, type AuditRow } from './store.ts';

/** Every event type the log records. */
export type AuditEventType =
  | 'login.succeeded' | 'login.failed'
  | 'consent.granted' | 'consent.denied'
  | 'authorization_code.issued' | 'authorization_code.reuse_detected'
  | 'token.issued' | 'refresh_token.rotated' | 'refresh_token.reuse_detected'
  | 'token.revoked' | 'grant.revoked' | 'token.introspected'
  | 'client.registered' | 'client.updated' | 'client.disabled' | 'client.deleted'
  | 'user.created' | 'scope.created' | 'signing_key.rotated' | 'registration_token.issued'
  | 'audit.purged';

export interface AuditInput {
  type: AuditEventType;
  actor: { type: ActorType; id?: string | null };
  clientId?: string | null;
  accountId?: string | null;
  grantId?: string | null;
  scopes?: string | readonly string[] | null;
  resource?: string | null;
  outcome?: 'success' | 'failure';
  /** Identifiers and hashes only: never a token, code, assertion, password or key. */
  details?: Record<string, unknown>;
}

export interface VerifyResult {
  ok: boolean;
  checked: number;
  head: { seq: number; hash: string };
  problem?: { seq: number; reason: string };
}

export interface AuditLog {
  /** Records an event in the current unit of work (or a transaction of its own). */
  record(input: AuditInput): Promise<void>;
  /** Whether this unit of work already recorded an event with this key (for de-duplication). */
  once(key: string): boolean;
  verify(): Promise<VerifyResult>;
  find(filter: AuditFilter): Promise<AuditRow[]>;
  purge(cutoff: Date, actor: AuditInput['actor']): Promise<{ purged: number; throughSeq: number } | undefined>;
}

const PENDING = Symbol('pending audit events');
const SEEN = Symbol('audit de-duplication keys');
const truncated = (v: string | null | undefined, max: number) => (v ? v.slice(0, max) : null);

export function createAuditLog(db: Db, chainKey: Buffer): AuditLog {
  function pendingEvents(): AuditEvent[] | undefined {
    return db.workState(PENDING, () => {
      const events: AuditEvent[] = [];
      db.beforeCommit(() => appendChained(db, chainKey, events));
      return events;
    });
  }

  function toEvent(input: AuditInput): AuditEvent {
    const request = requestContext();
    const scopes = typeof input.scopes === 'string' ? input.scopes : input.scopes?.join(' ');
    return {
      occurredAt: new Date(),
      type: input.type,
      actorType: input.actor.type,
      actorId: input.actor.id ?? null,
      clientId: input.clientId ?? null,
      accountId: input.accountId ?? null,
      grantId: input.grantId ?? null,
      scopes: scopes || null,
      resource: input.resource ?? null,
      ip: request?.ip ?? null,
      userAgent: truncated(request?.userAgent, 512),
      requestId: request?.requestId ?? null,
      outcome: input.outcome ?? 'success',
      details: input.details ?? {},
    };
  }

  const log: AuditLog = {
    async record(input) {
      const pending = pendingEvents();
      if (pending) {
        pending.push(toEvent(input));
        return;
      }
      await db.tx(async () => log.record(input));
    },

    once(key) {
      const seen = db.workState(SEEN, () => new Set<string>());
      if (!seen || !seen.has(key)) {
        seen?.add(key);
        return true;
      }
      return false;
    },

    async verify() {
      const anchor = await readAnchor(db);
      let expectedSeq = anchor.seq + 1;
      let prevHash = anchor.hash;
      let checked = 0;
      let purgeRecorded = anchor.seq === 0;
      for (;;) {
        const page = await readChainPage(db, expectedSeq - 1, 1000);
        if (page.length === 0) break;
        for (const row of page) {
          const fail = (reason: string): VerifyResult => ({ ok: false, checked, head: { seq: expectedSeq - 1, hash: prevHash }, problem: { seq: row.seq, reason } });
          if (row.seq !== expectedSeq) return { ...fail(`row ${expectedSeq} is missing`), problem: { seq: expectedSeq, reason: `row ${expectedSeq} is missing` } };
          if (row.prev_hash !== prevHash) return fail(`row ${row.seq} does not follow row ${row.seq - 1} (prev_hash differs)`);
          if (chainHash(chainKey, fieldsOf(row)) !== row.hash) return fail(`row ${row.seq} was changed (its hash does not match its content)`);
          if (row.event_type === 'audit.purged' && row.details.through_seq === anchor.seq) purgeRecorded = true;
          prevHash = row.hash;
          expectedSeq += 1;
          checked += 1;
        }
      }
      const head = { seq: expectedSeq - 1, hash: prevHash };
      if (!purgeRecorded) {
        return { ok: false, checked, head, problem: { seq: anchor.seq + 1, reason: `rows up to ${anchor.seq} are gone without a recorded purge` } };
      }
      return { ok: true, checked, head };
    },

    find: (filter) => findEvents(db, filter),

    async purge(cutoff, actor) {
      return db.tx(async () => {
        const result = await purgeBefore(db, cutoff);
        if (result) {
          await log.record({ type: 'audit.purged', actor, details: { through_seq: result.throughSeq, purged: result.purged, before: cutoff.toISOString() } });
        }
        return result;
      });
    },
  };
  return log;
}
