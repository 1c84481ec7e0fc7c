/**
 * The servers the benchmark compares (agentauth, the plain-adapter peer, the in-memory ceiling,
 * node:http), each started on loopback and set up alike: one
 * ES256 client key shared by every client, a client_credentials client, a resource server
 * introspecting as its own client, opaque and JWT resource servers, code-flow clients, one user.
 *
 * Import after DATABASE_URL / REDIS_URL are set: the test helpers read them when loaded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ClientMetadata } from 'oidc-provider';
import { freePort, newDeployment, ROOT, runCli, spawnServer } from '../../test/helpers/server.ts';
import type { ReferenceProviderConfig } from '../servers/reference-provider.ts';
import { mapConcurrently } from './load.ts';
import { pin } from './machine.ts';
import { REDIRECT_URI, SCOPE, type OAuthFixture } from './oauth.ts';

/** 'before': agentauth from another checkout (--ab-dir), beside this one in the same run. */
export type TargetName = 'agentauth' | 'before' | 'peer' | 'bare' | 'plain';

export interface Target {
  name: TargetName;
  /** Base URLs of the running processes. */
  urls: string[];
  pids(): number[];
  /** Absent for node:http, which speaks no OAuth. */
  fixture?: OAuthFixture;
  /** agentauth only: its deployment's environment (the database the bench seeds). */
  env?: NodeJS.ProcessEnv;
  /** agentauth and the peer: the database and Redis key prefix it stores under (for per-request counts). */
  storage?: { databaseUrl: string; redisKeyPrefix: string };
  /** agentauth only: starts another process on the same Postgres and Redis. */
  addProcess?(): Promise<void>;
  /** agentauth only: stops every process but the first. */
  dropExtraProcesses?(): Promise<void>;
  /** Pins every process to these cores ('' leaves them where they are). */
  pinTo(cores: string): void;
  stop(): Promise<void>;
}

export interface StartOptions {
  serverCores: string;
  flowClients: number;
  /** Writes a CPU profile per server process here (node --cpu-prof), at exit. */
  cpuProfDir?: string;
  /** Runs agentauth from another checkout (before/after comparisons); this one by default. */
  serverDir?: string;
  /**
   * Node flags for the server processes, in place of the ones agentauth runs with
   * (`serverNodeFlags()`, src/node-flags.ts); `''` starts agentauth with none.
   */
  nodeOptions?: string;
}

interface ClientKey {
  privateKey: KeyObject;
  kid: string;
  publicJwk: Record<string, unknown>;
}

function clientKey(): ClientKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = 'bench-client';
  return { privateKey, kid, publicJwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' } };
}

const OPAQUE_RS = 'https://opaque.bench.example/';
const JWT_RS = 'https://jwt.bench.example/';
/** Opaque tokens outlive the run, so the ones prepared for introspection stay active. */
const OPAQUE_TTL = 3600;
const JWT_TTL = 300;

async function stopChild(child: ChildProcess): Promise<void> {
  child.removeAllListeners('exit');
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

const profileOptions = (dir: string | undefined, nodeOptions = '') => ({
  NODE_OPTIONS: [nodeOptions, dir ? `--cpu-prof --cpu-prof-dir=${path.resolve(dir)}` : ''].filter(Boolean).join(' '),
});
/** agentauth's Node flags: the ones it runs with, or the run's own. */
const agentauthFlags = (nodeOptions: string | undefined) => (nodeOptions === undefined ? undefined : nodeOptions.split(/\s+/).filter(Boolean));

export async function startAgentauth(options: StartOptions): Promise<Target> {
  const deployment = await newDeployment();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {
    ...deployment.env,
    ISSUER: issuer,
    LOG_LEVEL: 'warn',
    TOKEN_RATE_LIMIT: '1000000',
    NODE_OPTIONS: '',
  };
  const processes: { child: ChildProcess; url: string }[] = [];
  const startProcess = async (listenPort: number) => {
    const { child } = await spawnServer(
      { ...env, PORT: String(listenPort), ...profileOptions(options.cpuProfDir) },
      options.serverDir ?? ROOT,
      agentauthFlags(options.nodeOptions),
    );
    pin(child.pid!, options.serverCores);
    processes.push({ child, url: `http://127.0.0.1:${listenPort}` });
  };
  await startProcess(port);

  const cli = async (args: string[], stdin?: string) => {
    const r = await runCli(env, [...args, '--json'], stdin);
    if (r.code !== 0) throw new Error(`agentauth ${args.slice(0, 2).join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  const key = clientKey();
  const jwksFile = path.join(mkdtempSync(path.join(os.tmpdir(), 'agentauth-bench-')), 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [key.publicJwk] }));
  await cli(['scopes', 'create', SCOPE, '--description', 'Benchmark']);
  const password = randomBytes(12).toString('base64url');
  const username = 'bench-user';
  const user = await cli(['users', 'create', username, '--password-stdin'], password);
  const created = await mapConcurrently(['cc', 'introspector', ...Array.from({ length: options.flowClients }, (_, i) => `flow-${i}`)], 4, (name) => {
    const args = ['clients', 'create', '--name', `bench ${name}`, '--jwks-file', jwksFile, '--scope', SCOPE];
    if (name.startsWith('flow')) args.push('--redirect-uri', REDIRECT_URI);
    else args.push('--grant-types', 'client_credentials');
    return cli(args).then((c) => String(c.client_id));
  });
  const [ccClient, introspector, ...flowClients] = created as [string, string, ...string[]];
  await cli(['resources', 'create', OPAQUE_RS, '--scopes', SCOPE, '--access-token-ttl', String(OPAQUE_TTL), '--client', introspector]);
  await cli(['resources', 'create', JWT_RS, '--scopes', SCOPE, '--token-format', 'jwt', '--access-token-ttl', String(JWT_TTL)]);

  return {
    name: 'agentauth',
    get urls() {
      return processes.map((p) => p.url);
    },
    pids: () => processes.map((p) => p.child.pid!),
    env,
    storage: env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL, redisKeyPrefix: env.REDIS_KEY_PREFIX ?? '' } : undefined,
    fixture: {
      issuer,
      get urls() {
        return processes.map((p) => p.url);
      },
      key,
      ccClient,
      introspector,
      flowClients,
      user: { id: String(user.id), username, password },
      resources: { opaque: OPAQUE_RS, jwt: JWT_RS },
    },
    async addProcess() {
      await startProcess(await freePort());
    },
    async dropExtraProcesses() {
      await Promise.all(processes.splice(1).map((p) => stopChild(p.child)));
    },
    pinTo(cores) {
      for (const p of processes) pin(p.child.pid!, cores);
    },
    async stop() {
      await Promise.all(processes.map((p) => stopChild(p.child)));
      await deployment.cleanup();
    },
  };
}

/** Starts a bench server script and waits for its "listening on <port>" line. */
async function spawnScript(script: string, env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [path.join(ROOT, script)], {
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const collect = (d: Buffer) => {
      output += d;
      const port = /listening on (\d+)/.exec(output)?.[1];
      if (port) resolve({ child, port: Number(port) });
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}:\n${output}`)));
  });
}

function scriptTarget(name: TargetName, child: ChildProcess, url: string, fixture?: OAuthFixture): Target {
  return {
    name,
    urls: [url],
    pids: () => [child.pid!],
    fixture,
    pinTo: (cores) => pin(child.pid!, cores),
    stop: () => stopChild(child),
  };
}

/**
 * A reference server (bench/servers/reference-provider.ts) with the same clients, keys, resource
 * servers and user as agentauth's: the in-memory ceiling or the plain-adapter peer.
 */
async function startReferenceProvider(
  name: 'bare' | 'peer',
  script: string,
  options: StartOptions,
  storage: Pick<ReferenceProviderConfig, 'databaseUrl' | 'redisUrl' | 'redisKeyPrefix'> = {},
): Promise<{ target: Target; child: ChildProcess }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const key = clientKey();
  const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const jwks = { keys: [key.publicJwk] };
  const confidential = { token_endpoint_auth_method: 'private_key_jwt' as const, jwks: jwks as ClientMetadata['jwks'], scope: SCOPE };
  const flowClients = Array.from({ length: options.flowClients }, (_, i) => `bench-flow-${i}`);
  const clients: ClientMetadata[] = [
    { client_id: 'bench-cc', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], ...confidential },
    { client_id: 'bench-rs', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], ...confidential },
    ...flowClients.map((client_id) => ({
      client_id,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code' as const],
      redirect_uris: [REDIRECT_URI],
      ...confidential,
    })),
  ];
  const user = { id: 'bench-user', username: 'bench-user', password: randomBytes(12).toString('base64url') };
  const resourceServer = (identifier: string, tokenFormat: 'opaque' | 'jwt', accessTokenTtl: number) => ({
    identifier,
    scopes: [SCOPE],
    tokenFormat,
    accessTokenTtl,
    introspectorClient: 'bench-rs',
    eventDeliveryUri: null,
  });
  const config: ReferenceProviderConfig = {
    issuer,
    port,
    signingJwk: { ...signing, kid: `${name}-signing`, alg: 'ES256', use: 'sig' },
    clients,
    scopes: [SCOPE],
    resources: [resourceServer(OPAQUE_RS, 'opaque', OPAQUE_TTL), resourceServer(JWT_RS, 'jwt', JWT_TTL)],
    user: { username: user.username, password: user.password },
    ...storage,
  };
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), `${name}-provider-`)), 'config.json');
  writeFileSync(file, JSON.stringify(config));
  const { child } = await spawnScript(script, { BENCH_REFERENCE_CONFIG: file, ...profileOptions(options.cpuProfDir, options.nodeOptions) });
  pin(child.pid!, options.serverCores);
  const target = scriptTarget(name, child, issuer, {
    issuer,
    urls: [issuer],
    key,
    ccClient: 'bench-cc',
    introspector: 'bench-rs',
    flowClients,
    user,
    resources: { opaque: OPAQUE_RS, jwt: JWT_RS },
  });
  return { target, child };
}

/** The in-memory ceiling: oidc-provider with agentauth's configuration and the MemoryAdapter. */
export async function startBareProvider(options: StartOptions): Promise<Target> {
  return (await startReferenceProvider('bare', 'bench/servers/bare-provider.ts', options)).target;
}

/** The peer: the same configuration over one PostgreSQL table and Redis, in a database of its own. */
export async function startPeerProvider(options: StartOptions): Promise<Target> {
  const deployment = await newDeployment();
  try {
    const { target } = await startReferenceProvider('peer', 'bench/servers/plain-adapter-provider.ts', options, {
      databaseUrl: deployment.env.DATABASE_URL,
      redisUrl: deployment.env.REDIS_URL,
      redisKeyPrefix: deployment.env.REDIS_KEY_PREFIX,
    });
    const stop = target.stop;
    return {
      ...target,
      storage: { databaseUrl: deployment.env.DATABASE_URL!, redisKeyPrefix: deployment.env.REDIS_KEY_PREFIX ?? '' },
      async stop() {
        await stop();
        await deployment.cleanup();
      },
    };
  } catch (err) {
    await deployment.cleanup();
    throw err;
  }
}

export async function startPlainHttp(options: StartOptions): Promise<Target> {
  const { child, port } = await spawnScript('bench/servers/plain-http.ts', { PORT: '0' });
  pin(child.pid!, options.serverCores);
  return scriptTarget('plain', child, `http://127.0.0.1:${port}`);
}
