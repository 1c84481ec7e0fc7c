/** The scopes table: names a client may request and the words the user is shown for each. */
import type { Db } from '../storage/db.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';

export interface Scope {
  name: string;
  description: string;
}

/** Creates a scope, or updates its description; every instance learns of it at once. */
export async function upsertScope(db: Db, scope: Scope): Promise<Scope> {
  return db.tx(async () => {
    await db.query(
      'INSERT INTO scopes (name, description) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description',
      [scope.name, scope.description],
    );
    await bumpConfigGeneration(db);
    return scope;
  });
}

export async function listScopes(db: Db): Promise<Scope[]> {
  return (await db.query<Scope>('SELECT name, description FROM scopes ORDER BY name')).rows;
}

export async function findScopes(db: Db, names: string[]): Promise<Scope[]> {
  if (names.length === 0) return [];
  return (await db.query<Scope>('SELECT name, description FROM scopes WHERE name = ANY($1::text[]) ORDER BY name', [names])).rows;
}
