/**
 * client_delegates: which clients may be handed tokens issued to another client (RFC 8693
 * delegation). Set by an operator (`agentauth clients update <id> --delegate-to <client_id>`, the
 * admin API), never by the clients themselves: who may act for a user is policy.
 */
import type { Db } from '../storage/db.ts';

/** The clients this client may delegate to, in a stable order. */
export async function delegatesOf(db: Db, clientId: string): Promise<string[]> {
  const r = await db.query<{ delegate_id: string }>('SELECT delegate_id FROM client_delegates WHERE client_id = $1 ORDER BY delegate_id', [clientId]);
  return r.rows.map((row) => row.delegate_id);
}

/** Whether `delegateId` may exchange tokens issued to `clientId`. */
export async function isDelegate(db: Db, clientId: string, delegateId: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM client_delegates WHERE client_id = $1 AND delegate_id = $2', [clientId, delegateId]);
  return r.rowCount === 1;
}

/** Replaces the client's delegates; returns those added and those removed. */
export async function setDelegates(db: Db, clientId: string, delegates: readonly string[]): Promise<{ added: string[]; removed: string[] }> {
  return db.tx(async () => {
    const before = new Set(await delegatesOf(db, clientId));
    const after = new Set(delegates);
    const added = [...after].filter((d) => !before.has(d));
    const removed = [...before].filter((d) => !after.has(d));
    if (removed.length) await db.query('DELETE FROM client_delegates WHERE client_id = $1 AND delegate_id = ANY($2::text[])', [clientId, removed]);
    for (const delegate of added) {
      await db.query('INSERT INTO client_delegates (client_id, delegate_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [clientId, delegate]);
    }
    return { added, removed };
  });
}

/** Display names of clients, for the consent and account pages. */
export async function clientNames(db: Db, clientIds: readonly string[]): Promise<Map<string, string>> {
  if (clientIds.length === 0) return new Map();
  const r = await db.query<{ client_id: string; name: string | null }>(
    "SELECT client_id, metadata->>'client_name' AS name FROM clients WHERE client_id = ANY($1::text[])",
    [clientIds],
  );
  return new Map(r.rows.map((row) => [row.client_id, row.name ?? row.client_id]));
}
