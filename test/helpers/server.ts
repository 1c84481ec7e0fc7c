/**
 * Starts the real server as a child process on a loopback port: on Postgres and Redis when
 * DATABASE_URL / REDIS_URL are set (a fresh database and key prefix per server), otherwise on
 * the embedded default in a temporary data directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { serverNodeFlags } from '../../src/node-flags.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const REAL_SERVICES = Boolean(process.env.DATABASE_URL);

/** Everything any server printed, to check after the suite that no secret reached a log. */
export const allServerOutput: string[] = [];

export interface TestServer {
  issuer: string;
  /** Where the server is reached; the issuer unless a test set a different ISSUER. */
  baseUrl: string;
  env: NodeJS.ProcessEnv;
  /** Runs `agentauth …` against this server's configuration. */
  cli(args: string[], stdin?: string): Promise<CliResult>;
  output(): string;
  /** Stops the server process (SIGTERM, or SIGKILL for a crash) but keeps its data. */
  halt(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** The environment with no storage settings: the embedded default. */
function baseEnv(): NodeJS.ProcessEnv {
  const { DATABASE_URL: _db, REDIS_URL: _redis, ...rest } = process.env;
  return { ...rest, LOG_LEVEL: 'info', NODE_NO_WARNINGS: '1' };
}

async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = process.env.DATABASE_URL!;
  const name = `agentauth_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** Environment for a new, empty deployment: real services when configured, else a temp data dir. */
export async function newDeployment(): Promise<{ env: NodeJS.ProcessEnv; cleanup(): Promise<void> }> {
  const env = baseEnv();
  if (REAL_SERVICES) {
    const db = await createDatabase();
    env.DATABASE_URL = db.url;
    if (process.env.REDIS_URL) env.REDIS_URL = process.env.REDIS_URL;
    env.REDIS_KEY_PREFIX = `agentauth-test-${randomBytes(4).toString('hex')}:`;
    env.KEY_ENCRYPTION_KEY = randomBytes(32).toString('base64url');
    env.COOKIE_KEYS = randomBytes(32).toString('base64url');
    return { env, cleanup: () => db.drop() };
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-test-'));
  env.DATA_DIR = dir;
  return { env, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
}

export function runCli(env: NodeJS.ProcessEnv, args: string[], stdin?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/agentauth.js'), ...args], { env, cwd: ROOT, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    if (stdin !== undefined) child.stdin.end(stdin);
    else child.stdin.end();
  });
}

/** Stops a server process and waits until it has exited (at once when it already has). */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  child.removeAllListeners('exit');
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

/** Spawns `node src/main.ts`, with the flags the Dockerfile gives, and waits until it listens; rejects with its output if it exits. */
export function spawnServer(env: NodeJS.ProcessEnv, checkout = ROOT, nodeFlags = serverNodeFlags()): Promise<{ child: ChildProcess; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeFlags, path.join(checkout, 'src/main.ts')], {
      env,
      cwd: checkout,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const collect = (d: Buffer) => {
      out += d;
      allServerOutput.push(d.toString());
      if (out.includes('agentauth is running at')) resolve({ child, output: () => out });
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${out}`)));
  });
}

/**
 * @param extraEnv settings on top of the deployment's
 * @param serverEnv changes only the server's environment (the CLI keeps the deployment's), e.g.
 *   to reach PostgreSQL through a proxy a test can cut
 * @param nodeFlags the server's Node flags: the Dockerfile's by default (src/node-flags.ts)
 */
export async function startServer(
  extraEnv: NodeJS.ProcessEnv = {},
  serverEnv: (env: NodeJS.ProcessEnv) => NodeJS.ProcessEnv = (env) => env,
  nodeFlags = serverNodeFlags(),
): Promise<TestServer> {
  const deployment = await newDeployment();
  const port = extraEnv.PORT ? Number(extraEnv.PORT) : await freePort();
  const baseUrl = `http://localhost:${port}`;
  const env = { ...deployment.env, PORT: String(port), ISSUER: baseUrl, ...extraEnv };
  const { child, output } = await spawnServer(serverEnv(env), ROOT, nodeFlags);
  const halt = (signal: NodeJS.Signals = 'SIGTERM') => stopProcess(child, signal);
  return {
    issuer: env.ISSUER!,
    baseUrl,
    env,
    cli: (args, stdin) => runCli(env, args, stdin),
    output,
    halt,
    async stop() {
      await halt();
      await deployment.cleanup();
    },
  };
}

/**
 * Deletes everything one deployment keeps in Redis, as a Redis that lost its data would: only
 * the keys under its REDIS_KEY_PREFIX. Never FLUSHALL: test files run side by side on one Redis,
 * and a global flush wipes the sessions and interactions of every other suite's server.
 */
export async function loseDeploymentRedis(env: NodeJS.ProcessEnv): Promise<void> {
  const { Redis } = await import('ioredis');
  const prefix = env.REDIS_KEY_PREFIX;
  if (!env.REDIS_URL || !prefix) throw new Error('loseDeploymentRedis needs REDIS_URL and REDIS_KEY_PREFIX');
  const redis = new Redis(env.REDIS_URL);
  try {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    if ((await redis.keys(`${prefix}*`)).length) throw new Error(`keys under ${prefix} survived`);
  } finally {
    redis.disconnect();
  }
}
