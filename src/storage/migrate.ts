/**
 * Forward-only migrations: `migrations/NNN_name.sql`, each applied in one transaction under an
 * advisory lock (so two instances starting together apply it once), recorded in schema_migrations,
 * with no statement timeout.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Db } from './db.ts';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
const MIGRATION_FILE = /^(\d{3})_[a-z0-9_]+\.sql$/;

export interface MigrationResult {
  applied: string[];
}

export async function migrate(db: Db): Promise<MigrationResult> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => MIGRATION_FILE.test(f)).sort();
  return db.tx(async () => {
    // No statement timeout here (the pool's 5 s is for requests): an index built on a large table
    // must not fail mid-deploy, and a second instance must wait for the first one's migration.
    await db.query('SET LOCAL statement_timeout = 0');
    await db.query("SELECT pg_advisory_xact_lock(hashtext('agentauth:migrations'))");
    await db.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await db.query<{ version: string }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const applied: string[] = [];
    for (const file of files) {
      const version = file.slice(0, 3);
      if (done.has(version)) continue;
      await db.script(await readFile(MIGRATIONS_DIR + file, 'utf8'));
      await db.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [version, file]);
      applied.push(file);
    }
    return { applied };
  });
}
