/** Bounded deletes for the maintenance run (src/maintenance/purge.ts). */
import type { Db } from './db.ts';

/**
 * Deletes up to `limit` rows of `table` matching `where` (trusted SQL, never user input), found
 * through whatever index serves `where` and deleted by ctid: one short statement, however large
 * the backlog. Returns how many rows went.
 */
export async function deleteBatch(db: Db, table: string, where: string, limit: number): Promise<number> {
  const r = await db.query(`DELETE FROM ${table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${table} WHERE ${where} LIMIT $1))`, [limit]);
  return r.rowCount;
}
