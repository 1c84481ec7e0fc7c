/**
 * Issue 14: maintenance at real sizes. Purges run in bounded batches under a lock (one process
 * at a time) and include expired grants nobody revoked; audit exports have no cap and the admin
 * route pages with a `next` link. Rows are written straight into the database, as a backlog
 * left by months of use would be (the embedded server is halted for that, then run again).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { openDirect } from './helpers/direct-db.ts';
import { newDeployment, REAL_SERVICES, runCli, spawnServer, startServer, stopProcess, type TestServer } from './helpers/server.ts';

const EXPORTED_ROWS = 100_050;

describe('maintenance at real sizes', () => {
  let server: TestServer;
  let restarted: Awaited<ReturnType<typeof spawnServer>> | undefined;
  const adminToken = randomBytes(24).toString('base64url');

  before(async () => {
    server = await startServer({ ADMIN_TOKEN: adminToken });
    await server.halt();
    const db = await openDirect(server);
    try {
      await db.query(`INSERT INTO oidc_artifacts (model, id_hash, payload, expires_at)
        SELECT 'AccessToken', sha256(('expired-' || g)::bytea), '{}', now() - interval '1 hour' FROM generate_series(1, 25000) g`);
      await db.query(`INSERT INTO oidc_artifacts (model, id_hash, payload, expires_at)
        SELECT 'AccessToken', sha256(('live-' || g)::bytea), '{}', now() + interval '1 hour' FROM generate_series(1, 10) g`);
      await db.query(`INSERT INTO grants (id, account_id, client_id, payload, expires_at, revoked_at)
        SELECT 'issue14-' || kind || '-' || g, 'acct', 'agt', '{}', expires, revoked FROM generate_series(1, 3) g,
        (VALUES ('expired', now() - interval '1 day', NULL::timestamptz), ('live', now() + interval '1 day', NULL), ('tombstone', now() + interval '1 day', now() - interval '400 days')) AS k(kind, expires, revoked)`);
      await db.query(`INSERT INTO audit_events (occurred_at, event_type, actor_type, outcome)
        SELECT now(), 'issue14.row', 'system', 'success' FROM generate_series(1, ${EXPORTED_ROWS})`);
    } finally {
      await db.close();
    }
  });
  after(async () => {
    if (restarted) await stopProcess(restarted.child);
    await server?.stop();
  });

  it('issue-14: a purge with a large backlog completes in bounded batches, expired unrevoked grants included', async () => {
    const r = await server.cli(['purge', '--batch-size', '1000', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { skipped: boolean; deleted: Record<string, number> };
    assert.equal(report.skipped, false);
    assert.ok(report.deleted.oidc_artifacts! >= 25_000, JSON.stringify(report));
    const db = await openDirect(server);
    try {
      assert.deepEqual(await db.query('SELECT count(*)::int AS n FROM oidc_artifacts WHERE expires_at < now()'), [{ n: 0 }]);
      assert.deepEqual(await db.query("SELECT count(*)::int AS n FROM oidc_artifacts WHERE expires_at > now() AND payload = '{}'"), [{ n: 10 }]);
      const grants = await db.query<{ id: string }>("SELECT id FROM grants WHERE id LIKE 'issue14-%' ORDER BY id");
      assert.deepEqual(
        grants.map((g) => g.id),
        ['issue14-live-1', 'issue14-live-2', 'issue14-live-3'],
      );
    } finally {
      await db.close();
    }
  });

  it('issue-14: only one process purges at a time', { skip: !REAL_SERVICES && 'the embedded database has one process by construction' }, async () => {
    const db = await openDirect(server);
    try {
      await db.query("SELECT pg_advisory_lock(hashtext('agentauth:maintenance'))");
      const held = JSON.parse((await server.cli(['purge', '--json'])).stdout) as { skipped: boolean };
      assert.equal(held.skipped, true);
      await db.query("SELECT pg_advisory_unlock(hashtext('agentauth:maintenance'))");
      const free = JSON.parse((await server.cli(['purge', '--json'])).stdout) as { skipped: boolean };
      assert.equal(free.skipped, false);
    } finally {
      await db.close();
    }
  });

  it('issue-14: an export of more than 100,000 rows is complete', async () => {
    const lines = await server.cli(['audit', 'export']);
    assert.equal(lines.code, 0, lines.stderr);
    const rows = lines.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: number; event_type: string });
    assert.equal(rows.filter((row) => row.event_type === 'issue14.row').length, EXPORTED_ROWS);
    assert.ok(
      rows.every((row, i) => i === 0 || row.id > rows[i - 1]!.id),
      'oldest first, no repeats',
    );
    const json = await server.cli(['audit', 'export', '--json']);
    const events = (JSON.parse(json.stdout) as { events: { event_type: string }[] }).events;
    assert.equal(events.length, rows.length);
  });

  it('issue-14: GET /admin/audit pages with a next link until the last page', async () => {
    restarted = await spawnServer(server.env);
    const seen: number[] = [];
    let ours = 0;
    let next: string | undefined = '/admin/audit?limit=10000';
    let pages = 0;
    while (next) {
      const res = await fetch(new URL(next, server.issuer), { headers: { authorization: `Bearer ${adminToken}` } });
      assert.equal(res.status, 200);
      for (const line of (await res.text()).trim().split('\n').filter(Boolean)) {
        const row = JSON.parse(line) as { id: number; event_type: string };
        seen.push(row.id);
        if (row.event_type === 'issue14.row') ours += 1;
      }
      next = /<([^>]+)>; rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
      pages += 1;
    }
    assert.ok(pages >= 11, `${pages} pages`);
    assert.equal(ours, EXPORTED_ROWS);
    assert.equal(new Set(seen).size, seen.length, 'no event twice');
  });
});

describe('migrations', () => {
  it('issue-14: a migration waiting longer than the request statement timeout (5 s) still completes', {
    skip: !REAL_SERVICES && 'needs a second PostgreSQL session to hold the migration lock',
  }, async () => {
    const deployment = await newDeployment();
    const pg = await import('pg');
    const holder = new pg.default.Client({ connectionString: deployment.env.DATABASE_URL });
    await holder.connect();
    // A second session to watch from: inside a transaction, pg_stat_activity is a frozen snapshot.
    const watcher = new pg.default.Client({ connectionString: deployment.env.DATABASE_URL });
    await watcher.connect();
    try {
      // Stands for a long migration (an index on a large table) another instance is running.
      await holder.query('BEGIN');
      await holder.query("SELECT pg_advisory_xact_lock(hashtext('agentauth:migrations'))");
      const migrating = runCli(deployment.env, ['migrate', '--json']);
      const waiting = async () =>
        (
          await watcher.query(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%agentauth:migrations%' AND pid <> pg_backend_pid()",
          )
        ).rowCount === 1;
      while (!(await waiting())) await new Promise((resolve) => setTimeout(resolve, 50));
      // Held past the pool's 5 s statement timeout, which used to cancel the waiting migration.
      await new Promise((resolve) => setTimeout(resolve, 5_500));
      assert.ok(await waiting(), 'the migration is still waiting, not cancelled');
      await holder.query('COMMIT');
      const r = await migrating;
      assert.equal(r.code, 0, r.stderr);
    } finally {
      await holder.end();
      await watcher.end();
      await deployment.cleanup();
    }
  });
});
