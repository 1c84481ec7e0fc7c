/**
 * The audit log: "user X, via agent Z, did Y". Events recorded during a unit of work are
 * inserted just before it commits, so a committed change always has its rows and a rolled-back
 * one never does; a sealer then links committed rows into the hash chain. Request metadata
 * (IP, user agent, request id) is added here.
 */
import { requestContext } from '../http/request-context.ts';
import type { Db } from '../storage/db.ts';
import { chainHash } from './chain.ts';
import { countUnsealed, fieldsOf, findEvents, insertEvents, purgeBefore, readAnchor, readChainPage, sealPending, type ActorType, type AuditEvent, type AuditFilter, type AuditRow } from './store.ts';

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
  /** Rows committed but not yet sealed into the chain (their transactions were still open). */
  unsealed: number;
  problem?: { seq: number; reason: string };
}

export interface AuditLog {
  /** Records an event in the current unit of work (or a transaction of its own). */
  record(input: AuditInput): Promise<void>;
  /** Links every committed, unsealed row into the chain; returns how many. */
  seal(): Promise<number>;
  verify(): Promise<VerifyResult>;
  find(filter: AuditFilter): Promise<AuditRow[]>;
  purge(cutoff: Date, actor: AuditInput['actor']): Promise<{ purged: number; throughSeq: number } | undefined>;
}

const PENDING = Symbol('pending audit events');
const truncated = (v: string | null | undefined, max: number) => (v ? v.slice(0, max) : null);

export function createAuditLog(db: Db, chainKey: Buffer): AuditLog {
  function pendingEvents(): AuditEvent[] | undefined {
    return db.workState(PENDING, () => {
      const events: AuditEvent[] = [];
      db.beforeCommit(() => insertEvents(db, events));
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

    async seal() {
      let total = 0;
      for (let sealed = await sealPending(db, chainKey); sealed > 0; sealed = await sealPending(db, chainKey)) total += sealed;
      return total;
    },

    async verify() {
      await log.seal();
      const anchor = await readAnchor(db);
      let expectedSeq = anchor.seq + 1;
      let prevHash = anchor.hash;
      let checked = 0;
      let purgeRecorded = anchor.seq === 0;
      for (;;) {
        const page = await readChainPage(db, expectedSeq - 1, 1000);
        if (page.length === 0) break;
        for (const row of page) {
          const fail = (reason: string, seq = row.seq): VerifyResult => ({ ok: false, checked, unsealed: 0, head: { seq: expectedSeq - 1, hash: prevHash }, problem: { seq, reason } });
          if (row.seq !== expectedSeq) return fail(`row ${expectedSeq} is missing`, expectedSeq);
          if (row.prev_hash !== prevHash) return fail(`row ${row.seq} does not follow row ${row.seq - 1} (prev_hash differs)`);
          if (chainHash(chainKey, fieldsOf(row)) !== row.hash) return fail(`row ${row.seq} was changed (its hash does not match its content)`);
          if (row.event_type === 'audit.purged' && row.details.through_seq === anchor.seq) purgeRecorded = true;
          prevHash = row.hash;
          expectedSeq += 1;
          checked += 1;
        }
      }
      const head = { seq: expectedSeq - 1, hash: prevHash };
      const unsealed = await countUnsealed(db);
      if (!purgeRecorded) {
        return { ok: false, checked, head, unsealed, problem: { seq: anchor.seq + 1, reason: `rows up to ${anchor.seq} are gone without a recorded purge` } };
      }
      return { ok: true, checked, head, unsealed };
    },

    async find(filter) {
      await log.seal();
      return findEvents(db, filter);
    },

    async purge(cutoff, actor) {
      await log.seal();
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
