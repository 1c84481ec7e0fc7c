/** The accounts table. */
import { randomUUID } from 'node:crypto';
import type { Db } from '../storage/db.ts';

export interface Account {
  id: string;
  username: string;
  passwordHash: string;
  disabled: boolean;
}

interface AccountRow {
  id: string;
  username: string;
  password_hash: string;
  disabled_at: Date | null;
}

const toAccount = (row: AccountRow): Account => ({ id: row.id, username: row.username, passwordHash: row.password_hash, disabled: row.disabled_at !== null });

/** Inserts an account; undefined when the username is taken. */
export async function insertAccount(db: Db, username: string, passwordHash: string): Promise<{ id: string; username: string } | undefined> {
  const r = await db.query<{ id: string }>(
    'INSERT INTO accounts (id, username, password_hash) VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING RETURNING id',
    [randomUUID(), username, passwordHash],
  );
  return r.rows[0] && { id: r.rows[0].id, username };
}

export async function findAccountByUsername(db: Db, username: string): Promise<Account | undefined> {
  const r = await db.query<AccountRow>('SELECT id, username, password_hash, disabled_at FROM accounts WHERE username = $1', [username]);
  return r.rows[0] && toAccount(r.rows[0]);
}

export async function findAccountById(db: Db, id: string): Promise<Account | undefined> {
  const r = await db.query<AccountRow>('SELECT id, username, password_hash, disabled_at FROM accounts WHERE id = $1', [id]);
  return r.rows[0] && toAccount(r.rows[0]);
}

/** Disables an account; false when there is no such (enabled) account. */
export async function disableAccount(db: Db, username: string): Promise<{ id: string } | undefined> {
  const r = await db.query<{ id: string }>('UPDATE accounts SET disabled_at = now() WHERE username = $1 AND disabled_at IS NULL RETURNING id', [username]);
  return r.rows[0];
}
