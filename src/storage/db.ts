/**
 * The one database interface: Postgres through `pg`, or PGlite on disk for the embedded default.
 *
 * Work runs in a unit of work bound by AsyncLocalStorage: `tx()` for explicit transactions and
 * `unitOfWork()` for a whole HTTP request, whose transaction begins lazily at the first query
 * and is committed before the response is sent.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { AgentauthError, CommitFailed } from '../errors.ts';
import { unobserved, type PoolStats, type StorageErrorKind, type StorageObserver } from './observer.ts';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Db {
  readonly kind: 'postgres' | 'pglite';
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<T>>;
  /** Runs a multi-statement SQL script with no parameters (migrations). */
  script(sql: string): Promise<void>;
  /** Runs fn in a transaction (joining the surrounding one if any). Throwing rolls back. */
  tx<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs fn outside any surrounding unit of work, so its transactions commit on their own.
   * Not on PGlite, whose one connection the surrounding work holds: there it joins instead.
   */
  detached<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs fn, a long wait that does not query (a password hash, a remote host), with no connection
   * held by the current unit of work: a connection held through it is one the pool cannot give
   * anyone else. What the work did so far is committed first (its row locks end there), and its
   * next query begins a new transaction; atCommit statements still go with the final commit.
   * Inside a tx() block it keeps the connection: that block asked for one transaction.
   */
  withoutConnection<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs fn unless another process is running under the same `lock` (then undefined): a session
   * advisory lock held on a connection of its own for the whole run, so fn may commit many short
   * transactions. On PGlite (one process) an in-process flag does the same.
   */
  exclusive<T>(lock: string, fn: () => Promise<T>): Promise<T | undefined>;
  /** Runs fn with a lazily-begun transaction; `commit` decides commit (true) or rollback. */
  unitOfWork<T>(fn: () => Promise<T>, commit: (result: T) => boolean): Promise<T>;
  /**
   * State kept for the current unit of work under `key`, created by `init` on first use;
   * undefined outside a unit of work. `init` may register atCommit statements.
   */
  workState<T>(key: symbol, init: () => T): T | undefined;
  /**
   * Adds a statement, built when the work commits, that is sent together with the COMMIT in one
   * round trip: the last write of a request costs no extra trip to the database. It takes no
   * parameters, so every value in it must go through sqlLiteral(). If it fails, nothing commits.
   */
  atCommit(build: () => string | undefined): void;
  /**
   * Runs fn once the current unit of work has committed, before its response is sent (never if
   * it rolls back); outside a unit of work, at once. For what must follow the commit and precede
   * the answer: telling other instances about a change. fn reports its own failure.
   */
  afterCommit(fn: () => Promise<void>): Promise<void>;
  /** Connections open, idle and waited for, for the pool gauges (PGlite: its one connection). */
  poolStats(): PoolStats;
  /**
   * Marks the current unit of work as one that commits even though its request is refused: the
   * writes a refusal must leave behind whole (a reuse tombstone, its tokens, outbox and audit
   * rows). Callers validate before they write anything else. No-op outside a unit of work.
   */
  mustCommit(): void;
  /**
   * A write (already made in this unit of work) that must outlast a rollback without keeping the
   * rest: if the work rolls back, the statement runs again, alone, in a transaction of its own.
   * So it must be idempotent; like atCommit it takes no parameters (sqlLiteral). A spent
   * assertion jti is one. No-op outside a unit of work.
   */
  keepOnRollback(statement: string): void;
  close(): Promise<void>;
}

/** A connection that stays ours until released: a pg pool client, or PGlite behind a mutex. */
interface Connection {
  /**
   * Begins a transaction. On PostgreSQL BEGIN is not sent alone: it leaves with the next
   * statement (or COMMIT), in the same write, and both are answered in one round trip.
   */
  begin(): Promise<void>;
  query<T>(sql: string, params?: unknown[]): Promise<QueryResult<T>>;
  script(sql: string): Promise<void>;
  /**
   * Runs `statements` (if any) and COMMIT in one round trip; fails if the transaction had
   * aborted (Postgres then answers COMMIT with ROLLBACK).
   */
  commit(statements: string): Promise<void>;
  release(broken: boolean): void;
}

interface Driver {
  kind: Db['kind'];
  acquire(): Promise<Connection>;
  stats(): PoolStats;
  close(): Promise<void>;
}

interface Work {
  connection?: Promise<Connection>;
  state: Map<symbol, unknown>;
  atCommit: (() => string | undefined)[];
  /** Set by mustCommit(): the work commits whatever its request's outcome (short of a throw). */
  mustCommit: boolean;
  /** keepOnRollback() statements, run on their own if the work rolls back. */
  keepOnRollback: string[];
  /**
   * Set once the work ends. A continuation that outlives its work (a promise started inside it
   * and not awaited) still sees it through AsyncLocalStorage; it must not touch a connection
   * that has gone back to the pool, so it runs outside any transaction instead.
   */
  ended: boolean;
  /** How many tx() blocks are open in this work: their statements must stay in one transaction. */
  atomicBlocks: number;
  /** afterCommit() functions, run once the work committed. */
  afterCommit: (() => Promise<void>)[];
}

const currentWork = new AsyncLocalStorage<Work>();

function createDb(driver: Driver): Db {
  const heldLocally = new Set<string>();
  async function connectionFor(work: Work): Promise<Connection> {
    if (!work.connection) {
      work.connection = (async () => {
        const connection = await driver.acquire();
        try {
          await connection.begin();
        } catch (err) {
          connection.release(true);
          throw err;
        }
        return connection;
      })();
    }
    return work.connection;
  }

  async function finishWork(work: Work, commit: boolean): Promise<void> {
    if (work.ended) return;
    let statements = '';
    if (commit && work.atCommit.length) {
      try {
        statements = work.atCommit
          .splice(0)
          .map((build) => build())
          .filter(Boolean)
          .join(';\n');
        if (statements) await connectionFor(work);
      } catch (err) {
        await finishWork(work, false);
        throw new CommitFailed(err);
      }
    }
    work.ended = true;
    if (!work.connection) return;
    let connection: Connection;
    try {
      connection = await work.connection;
    } catch {
      return; // never began: nothing to end
    }
    try {
      if (commit) {
        await connection.commit(statements);
      } else {
        await connection.query('ROLLBACK');
        if (work.keepOnRollback.length) {
          await connection.begin();
          await connection.commit(work.keepOnRollback.join(';\n'));
        }
      }
      connection.release(false);
    } catch (err) {
      connection.release(true);
      if (commit) throw new CommitFailed(err);
    }
  }

  /** Commits what a unit of work did so far and gives its connection back. */
  async function commitEarly(pending: Promise<Connection>): Promise<void> {
    let connection: Connection;
    try {
      connection = await pending;
    } catch {
      return; // never began: nothing to commit
    }
    try {
      await connection.commit('');
      connection.release(false);
    } catch (err) {
      connection.release(true);
      throw new CommitFailed(err);
    }
  }

  /** The work this code runs in, if it is still open. */
  const openWork = (): Work | undefined => {
    const work = currentWork.getStore();
    return work && !work.ended ? work : undefined;
  };

  async function runWork<T>(fn: () => Promise<T>, commit: (result: T) => boolean): Promise<T> {
    const work: Work = { state: new Map(), atCommit: [], mustCommit: false, keepOnRollback: [], ended: false, atomicBlocks: 0, afterCommit: [] };
    let result: T;
    try {
      result = await currentWork.run(work, fn);
    } catch (err) {
      await finishWork(work, false);
      throw err;
    }
    const committing = work.mustCommit || commit(result);
    await finishWork(work, committing);
    if (committing) for (const after of work.afterCommit) await after().catch(() => {});
    return result;
  }

  return {
    kind: driver.kind,
    async query<T>(sql: string, params: unknown[] = []) {
      const work = openWork();
      if (work) return (await connectionFor(work)).query<T>(sql, params);
      const connection = await driver.acquire();
      try {
        const result = await connection.query<T>(sql, params);
        connection.release(false);
        return result;
      } catch (err) {
        connection.release(isConnectionError(err));
        throw err;
      }
    },
    async script(sql) {
      const work = openWork();
      if (!work) throw new Error('script() runs inside tx()');
      await (await connectionFor(work)).script(sql);
    },
    tx(fn) {
      const atomic = async () => {
        const work = openWork();
        if (work) work.atomicBlocks++;
        try {
          return await fn();
        } finally {
          if (work) work.atomicBlocks--;
        }
      };
      if (openWork()) return atomic();
      return runWork(atomic, () => true);
    },
    detached(fn) {
      return driver.kind === 'pglite' ? fn() : currentWork.exit(fn);
    },
    async withoutConnection(fn) {
      const work = openWork();
      const pending = work?.connection;
      // Inside a tx() block the transaction is not split: the wait keeps the connection.
      if (work && pending && work.atomicBlocks === 0) {
        work.connection = undefined;
        await commitEarly(pending);
      }
      return fn();
    },
    async exclusive(lock, fn) {
      if (driver.kind === 'pglite') {
        // Its one connection is what fn's queries need: a flag stands in for the lock.
        if (heldLocally.has(lock)) return undefined;
        heldLocally.add(lock);
        try {
          return await currentWork.exit(fn);
        } finally {
          heldLocally.delete(lock);
        }
      }
      const holder = await driver.acquire();
      let broken = false;
      try {
        const r = await holder.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [lock]);
        if (!r.rows[0]?.ok) return undefined;
        try {
          return await currentWork.exit(fn);
        } finally {
          await holder.query('SELECT pg_advisory_unlock(hashtext($1))', [lock]).catch(() => {
            broken = true;
          });
        }
      } catch (err) {
        broken ||= isConnectionError(err);
        throw err;
      } finally {
        // A connection whose unlock failed may still hold the lock: it must not go back to the pool.
        holder.release(broken);
      }
    },
    unitOfWork(fn, commit) {
      if (openWork()) return fn();
      return runWork(fn, commit);
    },
    workState<T>(key: symbol, init: () => T): T | undefined {
      const work = openWork();
      if (!work) return undefined;
      if (!work.state.has(key)) work.state.set(key, init());
      return work.state.get(key) as T;
    },
    atCommit(build) {
      const work = openWork();
      if (!work) throw new Error('atCommit() outside a unit of work');
      work.atCommit.push(build);
    },
    async afterCommit(fn) {
      const work = openWork();
      if (work) work.afterCommit.push(fn);
      else await fn();
    },
    poolStats: () => driver.stats(),
    mustCommit() {
      const work = openWork();
      if (work) work.mustCommit = true;
    },
    keepOnRollback(statement) {
      openWork()?.keepOnRollback.push(statement);
    },
    close: () => driver.close(),
  };
}

/**
 * A database error reduced to what may be logged: some drivers attach the query's parameters,
 * which can hold hashes, sealed keys or user input.
 */
export class DbError extends AgentauthError {
  /** The SQLSTATE, by which a lost connection is told from a bug (src/http/dependency-errors.ts). */
  readonly code: string | undefined;
  /** The PostgreSQL function that raised it (names an error whatever the server's language). */
  readonly routine: string | undefined;
  constructor(err: unknown) {
    const source = err as { message?: unknown; code?: unknown; routine?: unknown };
    super(500, 'server_error', 'An unexpected error occurred.', { expose: false });
    this.name = 'DbError';
    this.error_detail = typeof source?.message === 'string' ? source.message : 'database error';
    this.code = typeof source?.code === 'string' ? source.code : undefined;
    this.routine = typeof source?.routine === 'string' ? source.routine : undefined;
  }
}

/** For the error counter: SQLSTATE 57014 is a statement timeout; classes 08 and 57, or no SQLSTATE, a lost or refused connection. */
function errorKind(err: unknown): StorageErrorKind {
  const code = (err as { code?: unknown })?.code;
  if (code === '57014') return 'timeout';
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code) || code.startsWith('08') || code.startsWith('57')) return 'connection';
  return 'query';
}

/** Runs a driver call, reporting and wrapping its failure (DbError carries no query text). */
const sanitizer =
  (observer: StorageObserver) =>
  async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (err) {
      observer.error(errorKind(err));
      throw new DbError(err);
    }
  };

function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  // SQLSTATE classes 08 (connection) and 57 (operator intervention) leave the client unusable.
  return typeof code !== 'string' || code.startsWith('08') || code.startsWith('57');
}

/** At most this many statement texts are prepared: a text built with varying content cannot fill the server's memory. */
const MAX_PREPARED_STATEMENTS = 500;

/**
 * Names for the statements this pool repeats, so each connection parses and plans one once (a
 * prepared statement) and afterwards sends only its parameters. Parsing and planning are most of
 * PostgreSQL's work for the short statements of a token request, and its CPU is the server's
 * too on a small machine. Only statements with parameters are named: a statement without any
 * carries its values as literals (Db.atCommit) and is a one-off. undefined: send it unnamed.
 */
function statementNames(enabled: boolean): (sql: string) => string | undefined {
  if (!enabled) return () => undefined;
  const names = new Map<string, string>();
  return (sql) => {
    let name = names.get(sql);
    if (name === undefined && names.size < MAX_PREPARED_STATEMENTS) {
      // From the text, not the order of first use: one name means one text in every instance, so
      // even a pooler that shares a server connection between instances cannot bind another's.
      name = `agentauth_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`;
      names.set(sql, name);
    }
    return name;
  };
}

/**
 * A prepared statement this connection can no longer use: its result type changed under it (a
 * migration of a newer instance altered what it reads) or a pooler in between lost it. The
 * connection is then dropped, so the next one prepares the statement afresh.
 */
export function isStalePreparedStatement(err: unknown): boolean {
  const { code, routine } = err as { code?: unknown; routine?: unknown };
  if (code === '26000') return true; // invalid_sql_statement_name: prepared statement "…" does not exist
  // "cached plan must not change result type", told by the server function that raises it: the
  // message itself is translated when the server's lc_messages is not English.
  return code === '0A000' && routine === 'RevalidateCachedQuery';
}

export function createPostgresDb(connectionString: string, options: { max?: number; observer?: StorageObserver; preparedStatements?: boolean } = {}): Db {
  const observer = options.observer ?? unobserved;
  const nameOf = statementNames(options.preparedStatements ?? true);
  const sanitized = sanitizer(observer);
  const pool = new pg.Pool({
    connectionString,
    max: options.max ?? 10,
    // A statement is written without waiting for the answer to the one before: BEGIN travels with
    // the first statement, and statements a request issues at once (Promise.all) share a trip.
    // Each still has its own Sync, so an error ends only its own statement (and, inside a
    // transaction, aborts the transaction as it would have one statement later).
    pipeline: true,
    connectionTimeoutMillis: 5_000,
    statement_timeout: 5_000,
    idle_in_transaction_session_timeout: 30_000,
  });
  // A client that loses its server emits 'error': idle ones on the pool, checked-out ones on
  // themselves. Without listeners the process would exit; the query in flight rejects instead.
  pool.on('error', () => observer.error('connection'));
  const listened = new WeakSet<pg.PoolClient>();
  return createDb({
    kind: 'postgres',
    stats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    async acquire() {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        observer.error('connection');
        throw err;
      }
      if (!listened.has(client)) {
        // Not counted here: the query in flight fails too, and sanitized() counts that.
        client.on('error', () => {});
        listened.add(client);
      }
      // BEGIN waits here until the first statement (or COMMIT) goes with it.
      let beginPending = false;
      // Set when one of its prepared statements went stale: the connection is then not reused.
      let stale = false;
      const stream = (client as unknown as { connection: { stream: { cork(): void; uncork(): void } } }).connection.stream;
      /**
       * Writes the statement (after BEGIN if one is pending) in one system call: pg writes each
       * protocol message (Parse, Bind, Describe, Execute, Sync) on its own, so a corked socket
       * turns five writes into one writev.
       */
      const send = <R>(sql: string, params?: unknown[]): Promise<R> => {
        stream.cork();
        try {
          const begun = beginPending ? client.query('BEGIN') : undefined;
          beginPending = false;
          const name = params?.length ? nameOf(sql) : undefined;
          const sent = (name ? client.query({ name, text: sql, values: params }) : client.query(sql, params)) as unknown as Promise<R>;
          if (!begun) return sent;
          // A failed BEGIN fails the statement behind it too (both ride on the same connection).
          return Promise.allSettled([begun, sent]).then(([b]) => (b.status === 'rejected' ? Promise.reject(b.reason) : sent));
        } finally {
          stream.uncork();
        }
      };
      return {
        async begin() {
          beginPending = true;
        },
        async query<T>(sql: string, params?: unknown[]) {
          try {
            const r = await sanitized(() => send<pg.QueryResult>(sql, params));
            return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
          } catch (err) {
            if (isStalePreparedStatement(err)) stale = true;
            throw err;
          }
        },
        async script(sql: string) {
          await sanitized(() => send(sql));
        },
        async commit(statements: string) {
          // Begun and nothing sent since: there is nothing to commit.
          if (beginPending && !statements) {
            beginPending = false;
            return;
          }
          const r: pg.QueryResult | pg.QueryResult[] = await sanitized(() => send(statements ? `${statements};\nCOMMIT` : 'COMMIT'));
          const last = Array.isArray(r) ? r.at(-1) : r;
          if (last?.command === 'ROLLBACK') throw new Error('the transaction had aborted; COMMIT rolled it back');
        },
        release: (broken) => {
          beginPending = false;
          client.release(broken || stale);
        },
      };
    },
    close: () => pool.end(),
  });
}

/** PGlite is a single connection: a FIFO mutex hands it to one unit of work at a time. */
export async function createPgliteDb(dataDir: string, observer: StorageObserver = unobserved): Promise<Db> {
  const sanitized = sanitizer(observer);
  const { PGlite } = await import('@electric-sql/pglite');
  const db: PGlite = await PGlite.create(dataDir);
  let tail: Promise<void> = Promise.resolve();
  // For the pool gauges: who holds the one connection and how many wait for it.
  let busy = false;
  let waiting = 0;
  return createDb({
    kind: 'pglite',
    stats: () => ({ total: 1, idle: busy ? 0 : 1, waiting }),
    async acquire() {
      let release!: () => void;
      const previous = tail;
      tail = new Promise<void>((resolve) => {
        release = () => {
          busy = false;
          resolve();
        };
      });
      waiting += 1;
      await previous;
      waiting -= 1;
      busy = true;
      return {
        async begin() {
          await sanitized(() => db.query('BEGIN'));
        },
        async query<T>(sql: string, params?: unknown[]) {
          const r = await sanitized(() => db.query<T>(sql, params ?? []));
          return { rows: r.rows, rowCount: r.affectedRows || r.rows.length };
        },
        async script(sql: string) {
          await sanitized(() => db.exec(sql));
        },
        async commit(statements: string) {
          // In-process, so round trips cost nothing. PGlite does not report COMMIT's outcome: a
          // statement fails inside an aborted transaction.
          if (statements) await sanitized(() => db.exec(statements));
          await sanitized(() => db.query('SELECT 1'));
          await sanitized(() => db.query('COMMIT'));
        },
        release: () => release(),
      };
    },
    async close() {
      await tail;
      await db.close();
    },
  });
}
