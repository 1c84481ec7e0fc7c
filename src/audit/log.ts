/**
 * The audit log: "user X, via agent Z, did Y". Events recorded during a unit of work are
 * inserted just before it commits, so a committed change always has its rows and a rolled-back
 * one never does; a sealer then covers committed rows with chained seals. Request metadata
 * (IP, user agent, request id) is added here.
 */
import type { Db } from '../storage/db.ts';
import { containsNul } from '../storage/nul.ts';
import { rowDigest, sealHash } from './chain.ts';
import {
  countAfter,
  eventsInRange,
  findEvents,
  holdSealLock,
  insertStatement,
  purgeBefore,
  purgeRecordedAfter,
  readAnchor,
  readSeals,
  sealPending,
  settledMaxId,
  type ActorType,
  type AuditEvent,
  type AuditFilter,
  type AuditRow,
  type Seal,
} from './store.ts';

/** Every event type the log records. */
export type AuditEventType =
  | 'login.succeeded'
  | 'login.failed'
  | 'consent.granted'
  | 'consent.denied'
  | 'authorization_code.issued'
  | 'authorization_code.reuse_detected'
  | 'token.issued'
  | 'token_exchange.refused'
  | 'refresh_token.rotated'
  | 'refresh_token.retried'
  | 'refresh_token.reuse_detected'
  | 'refresh_token.key_mismatch'
  | 'token.revoked'
  | 'grant.revoked'
  | 'token.introspected'
  | 'client.registered'
  | 'client.updated'
  | 'client.disabled'
  | 'client.deleted'
  | 'client.authentication_failed'
  | 'user.created'
  | 'user.disabled'
  | 'scope.created'
  | 'signing_key.rotated'
  | 'registration_token.issued'
  | 'resource_server.registered'
  | 'resource_server.deleted'
  | 'connection.registered'
  | 'connection.deleted'
  | 'connection.connected'
  | 'connection.disconnected'
  | 'connection.token_issued'
  | 'connection.broken'
  | 'audit.purged'
  | 'details_type.registered'
  | 'approval.requested'
  | 'approval.approved'
  | 'approval.denied';

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
  /** Event rows checked against their seals. */
  checked: number;
  /** The last seal that verified: keep its hash somewhere else to detect a truncated tail. */
  head: { seq: number; hash: string };
  /** Rows committed after the last seal (a verify seals first: only rows newer than its start). */
  unsealed: number;
  /** The first thing that does not fit: an event row by id, or a seal by seq. */
  problem?: { row?: number; seal?: number; reason: string };
}

export interface AuditLog {
  /** Records an event in the current unit of work (or a transaction of its own). */
  record(input: AuditInput): Promise<void>;
  /** Links every committed, unsealed row into the chain; returns how many. */
  seal(): Promise<number>;
  verify(): Promise<VerifyResult>;
  /** Seals, then reads one page of events after the cursor (an event id); see findEvents. */
  find(filter: AuditFilter, after: number, limit: number): Promise<AuditRow[]>;
  /**
   * Purges one batch (about `maxRows` events) of what was sealed before `cutoff`, recorded as an
   * audit.purged event; undefined when nothing is left to purge. Repeat until undefined.
   */
  purge(cutoff: Date, actor: AuditInput['actor'], maxRows: number): Promise<{ purged: number; throughSeq: number } | undefined>;
}

const PENDING = Symbol('pending audit events');
const truncated = (v: string | null | undefined, max: number) => (v ? v.slice(0, max) : null);

/** Where the current request came from, if the event is recorded inside one (injected: the audit log knows no HTTP). */
export type RequestMetadata = () => { ip: string; userAgent: string; requestId: string } | undefined;

export function createAuditLog(db: Db, chainKey: Buffer, currentRequest: RequestMetadata = () => undefined): AuditLog {
  function pendingEvents(): AuditEvent[] | undefined {
    return db.workState(PENDING, () => {
      const events: AuditEvent[] = [];
      db.atCommit(() => insertStatement(events));
      return events;
    });
  }

  /** Postgres text cannot hold NUL; hostile input (a username, say) may. Rebuilt only when it does. */
  function withoutNul<T>(value: T): T {
    return containsNul(value) ? stripNul(value) : value;
  }

  function stripNul<T>(value: T): T {
    if (typeof value === 'string') return value.replaceAll('\u0000', '') as T;
    if (Array.isArray(value)) return value.map(stripNul) as T;
    if (value && typeof value === 'object' && !(value instanceof Date)) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [stripNul(k), stripNul(v)])) as T;
    }
    return value;
  }

  function toEvent(input: AuditInput): AuditEvent {
    const request = currentRequest();
    const scopes = typeof input.scopes === 'string' ? input.scopes : input.scopes?.join(' ');
    return withoutNul({
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
    } satisfies AuditEvent);
  }

  /** Checks the chain from the anchor to the last seal, and that a purge explains what is gone. */
  async function verifyChain() {
    await holdSealLock(db);
    const anchor = await readAnchor(db);
    let previous = { seq: anchor.seq, lastId: anchor.lastId, hash: anchor.hash };
    let checked = 0;
    let purgeRecorded = anchor.seq === 0;
    for (;;) {
      const seals = await readSeals(db, previous.seq, 200);
      if (seals.length === 0) break;
      for (const seal of seals) {
        const rows = await eventsInRange(db, seal.afterId, seal.lastId);
        const problem = checkSeal(seal, previous) ?? checkRows(seal, rows);
        if (problem) return { ok: false, checked, head: { seq: previous.seq, hash: previous.hash }, unsealed: 0, problem };
        if (rows.some((row) => row.event_type === 'audit.purged' && row.details.through_seq === anchor.seq)) purgeRecorded = true;
        checked += seal.rowIds.length;
        previous = { seq: seal.seq, lastId: seal.lastId, hash: seal.hash };
      }
    }
    const head = { seq: previous.seq, hash: previous.hash };
    const unsealed = await countAfter(db, previous.lastId);
    // A purge that committed after this verification sealed, before it took the lock, left its
    // record unsealed: the next seal takes it in, as this verification's own seal would have.
    purgeRecorded ||= await purgeRecordedAfter(db, previous.lastId, anchor.seq);
    if (!purgeRecorded) {
      return {
        ok: false,
        checked,
        head,
        unsealed,
        problem: { seal: anchor.seq, reason: `events up to seal ${anchor.seq} are gone without a recorded purge` },
      };
    }
    return { ok: true, checked, head, unsealed };
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
      // Each batch in a transaction of its own, even when called inside one (an operation's):
      // joined to it, the seal lock would be held to its end while the next batch waits for a
      // connection to settle its rows on, and callers queued on the lock hold the rest.
      return db.detached(async () => {
        // Up to the rows final now, batch after batch: settling again on every batch would go on
        // for as long as requests keep adding rows, and a verification or export would not end.
        const settled = await settledMaxId(db);
        let total = 0;
        for (let sealed = await sealPending(db, chainKey, settled); sealed > 0; sealed = await sealPending(db, chainKey, settled)) total += sealed;
        return total;
      });
    },

    async verify() {
      await log.seal();
      // Sealed batches commit on their own (above); the reading is one transaction under the seal
      // lock, or a purge committing between its statements would look like missing seals or rows.
      return db.tx(() => verifyChain());
    },

    async find(filter, after, limit) {
      // Sealing once per export is enough: the first page seals what is there.
      if (after === 0) await log.seal();
      return findEvents(db, filter, after, limit);
    },

    async purge(cutoff, actor, maxRows) {
      await log.seal();
      return db.tx(async () => {
        const result = await purgeBefore(db, cutoff, maxRows);
        if (result) {
          await log.record({ type: 'audit.purged', actor, details: { through_seq: result.throughSeq, purged: result.purged, before: cutoff.toISOString() } });
        }
        return result;
      });
    },
  };
  return log;

  function checkSeal(seal: Seal, previous: { seq: number; lastId: number; hash: string }): VerifyResult['problem'] {
    if (seal.seq !== previous.seq + 1) return { seal: previous.seq + 1, reason: `seal ${previous.seq + 1} is missing` };
    if (seal.prevHash !== previous.hash || seal.afterId !== previous.lastId)
      return { seal: seal.seq, reason: `seal ${seal.seq} does not follow seal ${previous.seq}` };
    if (sealHash(chainKey, seal) !== seal.hash) return { seal: seal.seq, reason: `seal ${seal.seq} was changed` };
    return undefined;
  }
}

/** The first row, in id order, that is missing from, added to, or changed since its seal. */
function checkRows(seal: Seal, rows: AuditRow[]): VerifyResult['problem'] {
  const sealed = new Map(seal.rowIds.map((id, i) => [id, seal.rowDigests[i]]));
  const present = new Map(rows.map((row) => [row.id, row]));
  const ids = [...new Set([...seal.rowIds, ...present.keys()])].sort((a, b) => a - b);
  for (const id of ids) {
    const row = present.get(id);
    if (!row) return { row: id, reason: `row ${id} is missing (deleted after seal ${seal.seq})` };
    const digest = sealed.get(id);
    if (digest === undefined) return { row: id, reason: `row ${id} was added after seal ${seal.seq}` };
    if (rowDigest({ ...row }) !== digest) return { row: id, reason: `row ${id} was changed after seal ${seal.seq}` };
  }
  return undefined;
}
