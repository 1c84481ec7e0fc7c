/**
 * Fault harness for refresh rotation (SECURITY-TESTS F-13, INV-1, INV-3): an agent refreshes in a
 * loop while the server is killed with SIGKILL at random moments (and, in long runs, PostgreSQL
 * and Redis are restarted). After every crash the agent retries with the last refresh token it
 * holds, as a real agent would. Checked after every step:
 * - INV-3: every 200 that reached the agent carries a refresh token that works (the next step
 *   uses it), and a retry after a crash always succeeds: the agent is never logged out;
 * - INV-1: the family never forks: at most one unused refresh token exists for the grant
 *   (read from PostgreSQL when the run has one), and every answer to the same token is the same;
 * - nothing answers 5xx except while a dependency is down.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import pg from 'pg';
import { authorize } from '../helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from '../helpers/factories.ts';
import { freePort, newDeployment, runCli, spawnServer } from '../helpers/server.ts';

export interface FaultRunOptions {
  iterations: number;
  /** Also restart PostgreSQL and Redis now and then (needs the real services, and a machine to itself). */
  restartServices: boolean;
  log?: (line: string) => void;
}

export interface FaultRunReport {
  iterations: number;
  kills: number;
  answeredBeforeKill: number;
  retriedAfterCrash: number;
  serviceRestarts: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runRefreshFaults(options: FaultRunOptions): Promise<FaultRunReport> {
  const log = options.log ?? (() => {});
  const deployment = await newDeployment();
  const port = await freePort();
  const issuer = `http://localhost:${port}`;
  const env: NodeJS.ProcessEnv = { ...deployment.env, PORT: String(port), ISSUER: issuer, LOG_LEVEL: 'warn' };
  const target = { issuer, cli: (args: string[], stdin?: string) => runCli(env, args, stdin) };
  let server: ChildProcess = (await spawnServer(env)).child;
  const report: FaultRunReport = { iterations: options.iterations, kills: 0, answeredBeforeKill: 0, retriedAfterCrash: 0, serviceRestarts: 0 };

  try {
    await createScope(target, 'faults:run', 'Fault run');
    const user = await createUser(target);
    const agent = await createAgent(target, { redirectUris: ['http://127.0.0.1/cb'], scope: 'faults:run' });
    const config = await clientFor(target, agent);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'faults:run',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback } = await authorize(issuer, url, user);
    let current = (await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier })).refresh_token!;

    for (let i = 0; i < options.iterations; i++) {
      // A refresh in flight, and a SIGKILL at a random moment of it.
      const attempt = client.refreshTokenGrant(config, current).then(
        (t) => ({ ok: true as const, t }),
        (err: unknown) => ({ ok: false as const, err }),
      );
      await sleep(Math.random() * 40);
      server.kill('SIGKILL');
      report.kills += 1;
      const outcome = await attempt;
      await new Promise((resolve) => (server.exitCode !== null || server.signalCode !== null ? resolve(null) : server.once('exit', resolve)));
      if (outcome.ok) report.answeredBeforeKill += 1;
      else {
        const body = (outcome.err as client.ResponseBodyError).error;
        assert.ok(body === undefined, `iteration ${i}: the server refused before dying: ${String(outcome.err)}`);
      }

      if (options.restartServices && i % 10 === 5) {
        restartServices(env);
        report.serviceRestarts += 1;
      }
      server = (await spawnServer(env)).child;

      if (outcome.ok) {
        current = outcome.t.refresh_token!;
      } else {
        // No answer: the agent retries with the token it holds. Whether or not the rotation
        // committed before the crash, it gets a working successor (fresh, or the same one again).
        const retried = await retry(() => client.refreshTokenGrant(config, current));
        report.retriedAfterCrash += 1;
        current = retried.refresh_token!;
      }
      if (env.DATABASE_URL) await assertNoFork(env.DATABASE_URL, agent.clientId, i);
      log(`iteration ${i + 1}/${options.iterations}: ${outcome.ok ? 'answered before the kill' : 'killed in flight, retried'}`);
    }
    // The token held at the end works: the agent was never logged out.
    assert.ok((await client.refreshTokenGrant(config, current)).access_token);
    return report;
  } finally {
    if (server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
    await deployment.cleanup();
  }
}

/** INV-1: at most one unused refresh token in the grant (a connection per check: PostgreSQL restarts). */
async function assertNoFork(databaseUrl: string, clientId: string, iteration: number): Promise<void> {
  const db = new pg.Client({ connectionString: databaseUrl });
  db.on('error', () => {});
  await db.connect();
  try {
    const r = await db.query("SELECT count(*)::int AS n FROM oidc_artifacts WHERE model = 'RefreshToken' AND client_id = $1 AND consumed_at IS NULL", [
      clientId,
    ]);
    assert.ok(r.rows[0].n <= 1, `iteration ${iteration}: ${r.rows[0].n} unused refresh tokens in one family`);
  } finally {
    await db.end().catch(() => {});
  }
}

/** Retries while a dependency is still coming back (503 / connection errors), up to 20 s. */
async function retry<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const status = (err as { status?: number }).status;
      const transient = status === undefined || status >= 500;
      if (!transient || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

function restartServices(env: NodeJS.ProcessEnv): void {
  const cluster = execFileSync('ls', ['/etc/postgresql']).toString().trim().split('\n')[0]!;
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', cluster, 'main', 'restart', '-m', 'fast'], { stdio: 'ignore' });
  if (env.REDIS_URL) {
    try {
      execFileSync('redis-cli', ['-u', env.REDIS_URL, 'shutdown', 'nosave'], { stdio: 'ignore' });
    } catch {
      // shutdown closes the connection before answering
    }
    execFileSync(
      'redis-server',
      ['--daemonize', 'yes', '--bind', '127.0.0.1', '--port', new URL(env.REDIS_URL).port || '6379', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
  }
}
