/**
 * Opens a deployment's database directly, as someone with database access would: PostgreSQL
 * over a connection, or the embedded PGlite files (the server must be halted first).
 */
import path from 'node:path';
import pg from 'pg';
import type { TestServer } from './server.ts';

export interface DirectDb {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

export async function openDirect(server: TestServer): Promise<DirectDb> {
  if (server.env.DATABASE_URL) {
    const client = new pg.Client({ connectionString: server.env.DATABASE_URL });
    await client.connect();
    return {
      query: async <T>(sql: string, params?: unknown[]) => (await client.query(sql, params)).rows as T[],
      close: () => client.end(),
    };
  }
  const { PGlite } = await import('@electric-sql/pglite');
  const db = await PGlite.create(path.join(server.env.DATA_DIR!, 'pglite'));
  return {
    query: async <T>(sql: string, params?: unknown[]) => (await db.query<T>(sql, params ?? [])).rows,
    close: () => db.close(),
  };
}
