/** The scopes table: names a client may request and the words the user is shown for each. */
import type { Db } from '../storage/db.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';

export interface Scope {
  name: string;
  description: string;
  /** Whether self-registered (unverified) clients may request it. */
  allowUnverified: boolean;
}

const COLUMNS = 'name, description, allow_unverified AS "allowUnverified"';

/** Creates a scope, or sets its description and openness; every instance learns of it at once. */
export async function upsertScope(db: Db, scope: Scope): Promise<Scope> {
  return db.tx(async () => {
    await db.query(
      `INSERT INTO scopes (name, description, allow_unverified) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, allow_unverified = EXCLUDED.allow_unverified`,
      [scope.name, scope.description, scope.allowUnverified],
    );
    await bumpConfigGeneration(db);
    return scope;
  });
}

export async function listScopes(db: Db): Promise<Scope[]> {
  return (await db.query<Scope>(`SELECT ${COLUMNS} FROM scopes ORDER BY name`)).rows;
}

export async function findScopes(db: Db, names: string[]): Promise<Scope[]> {
  if (names.length === 0) return [];
  return (await db.query<Scope>(`SELECT ${COLUMNS} FROM scopes WHERE name = ANY($1::text[]) ORDER BY name`, [names])).rows;
}

/** The scopes self-registered clients may request. */
export async function scopesOpenToUnverified(db: Db): Promise<Set<string>> {
  return new Set((await db.query<{ name: string }>('SELECT name FROM scopes WHERE allow_unverified')).rows.map((r) => r.name));
}

/**
 * The `scope` a self-registered client is held to: what it declared that is open to unverified
 * clients (everything open when it declared nothing), always with openid, which also keeps the
 * value non-empty: oidc-provider reads an empty client scope as "any scope".
 */
export function scopeForUnverified(declared: unknown, open: Set<string>): string {
  const wanted = typeof declared === 'string' ? declared.split(' ').filter(Boolean) : [...open];
  return [...new Set(['openid', ...wanted.filter((s) => open.has(s))])].join(' ');
}
