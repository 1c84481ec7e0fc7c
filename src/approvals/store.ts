/**
 * approval_requests: the CIBA requests waiting for their user, as the user's page lists them.
 * oidc-provider owns the request itself; this row holds what the user reads and the sealed
 * auth_req_id needed to answer it. A decision is taken once: the UPDATE that records it is the
 * only one that can win.
 */
import type { Db } from '../storage/db.ts';
import { deleteBatch } from '../storage/delete-batch.ts';

export interface ApprovalRequest {
  id: string;
  authReqIdSealed: string;
  accountId: string;
  clientId: string;
  clientName: string | null;
  bindingMessage: string | null;
  scope: string;
  authorizationDetails: unknown[] | null;
  createdAt: Date;
  expiresAt: Date;
}

export type Decision = 'approved' | 'denied';

const COLUMNS = `a.id, a.auth_req_id_sealed AS "authReqIdSealed", a.account_id AS "accountId", a.client_id AS "clientId",
  c.metadata->>'client_name' AS "clientName", a.binding_message AS "bindingMessage", a.scope,
  a.authorization_details AS "authorizationDetails", a.created_at AS "createdAt", a.expires_at AS "expiresAt"`;

export async function insertApprovalRequest(db: Db, r: Omit<ApprovalRequest, 'clientName' | 'createdAt'>): Promise<void> {
  await db.query(
    `INSERT INTO approval_requests (id, auth_req_id_sealed, account_id, client_id, binding_message, scope, authorization_details, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      r.id,
      r.authReqIdSealed,
      r.accountId,
      r.clientId,
      r.bindingMessage,
      r.scope,
      r.authorizationDetails === null ? null : JSON.stringify(r.authorizationDetails),
      r.expiresAt,
    ],
  );
}

/** What waits for this user: undecided and unexpired, oldest first (approval_requests_waiting_idx). */
export async function waitingFor(db: Db, accountId: string): Promise<ApprovalRequest[]> {
  const r = await db.query<ApprovalRequest>(
    `SELECT ${COLUMNS} FROM approval_requests a LEFT JOIN clients c ON c.client_id = a.client_id
     WHERE a.account_id = $1 AND a.decided_at IS NULL AND a.expires_at > now() ORDER BY a.created_at`,
    [accountId],
  );
  return r.rows;
}

/**
 * Records the user's decision on their own waiting request; undefined when there is no such
 * request for this user, it was decided already, or it expired (so a second click, another
 * user, or a late click all change nothing).
 */
export async function decide(db: Db, id: string, accountId: string, decision: Decision): Promise<ApprovalRequest | undefined> {
  const r = await db.query<ApprovalRequest>(
    `WITH decided AS (
       UPDATE approval_requests SET decided_at = now(), decision = $3
       WHERE id = $1 AND account_id = $2 AND decided_at IS NULL AND expires_at > now() RETURNING *)
     SELECT ${COLUMNS} FROM decided a LEFT JOIN clients c ON c.client_id = a.client_id`,
    [id, accountId, decision],
  );
  return r.rows[0];
}

/** Deletes up to `limit` requests that expired over a day ago (answered or not); the audit trail keeps their story. */
export async function purgeApprovalRequests(db: Db, limit: number): Promise<number> {
  return deleteBatch(db, 'approval_requests', `expires_at < now() - interval '1 day'`, limit);
}
