/**
 * What the examples share: running agentauth's CLI to register themselves on first start, and a
 * private key kept between runs under examples/.data (never committed).
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, createPublicKey, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}
/** Runs `agentauth <args>`; the tests pass their own, bound to the deployment they started. */
export type Cli = (args: string[]) => Promise<CliResult>;

const ROOT = path.resolve(import.meta.dirname, '..');
const DATA = path.join(ROOT, 'examples', '.data');

/** The CLI of the agentauth in this checkout, with this process's configuration (DATA_DIR, DATABASE_URL …). */
export const localCli: Cli = (args) =>
  new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'bin', 'agentauth.js'), ...args], { cwd: ROOT, env: process.env }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });

const handlers = new WeakMap<http.Server, http.RequestListener>();

/**
 * Listens at once and answers 503 with Retry-After until `serve` hands over the handler: an
 * example registers itself after it knows its port, and a request in that window must get an
 * answer, not a connection that hangs.
 */
export async function listenWhileStarting(port: number, host: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const handler = handlers.get(server);
    if (handler) return void handler(req, res);
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end('{"error":"temporarily_unavailable"}');
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}

/** From now on `server` (from listenWhileStarting) answers with `handler`. */
export const serve = (server: http.Server, handler: http.RequestListener): void => void handlers.set(server, handler);

/** Runs a CLI command that must succeed, returning its --json output. */
export async function agentauth<T>(cli: Cli, args: string[]): Promise<T> {
  const r = await cli([...args, '--json']);
  if (r.code !== 0)
    throw new Error(
      `agentauth ${args.slice(0, 2).join(' ')} failed: ${r.stderr.trim()}\n(is agentauth running with ALLOW_PRIVATE_FETCH=true? see examples/README.md)`,
    );
  return JSON.parse(r.stdout) as T;
}

/**
 * Creates the scope, or sets its description if it exists (`scopes create` is an upsert).
 * `allowUnverified` opens it to self-registered clients (open registration, metadata documents).
 */
export async function ensureScope(cli: Cli, name: string, description: string, options: { allowUnverified?: boolean } = {}): Promise<void> {
  await agentauth(cli, ['scopes', 'create', name, '--description', description, ...(options.allowUnverified ? ['--allow-unverified'] : [])]);
}

export interface ExampleKey {
  privateJwk: Record<string, unknown> & { kid: string };
  publicJwk: Record<string, unknown>;
}

/** An ES256 key pair kept in examples/.data/<name>.key.json (0600), made on first use. */
export function exampleKey(name: string): ExampleKey {
  const file = path.join(DATA, `${name}.key.json`);
  if (!existsSync(file)) {
    mkdirSync(DATA, { recursive: true });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'ES256' };
    writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  }
  const privateJwk = JSON.parse(readFileSync(file, 'utf8')) as ExampleKey['privateJwk'];
  const publicJwk = {
    ...createPublicKey({ key: privateJwk as never, format: 'jwk' }).export({ format: 'jwk' }),
    kid: privateJwk.kid,
    alg: 'ES256',
    use: 'sig',
  };
  return { privateJwk, publicJwk };
}

/** Writes the public key set to a file the CLI can read (`--jwks-file`). */
export function jwksFile(name: string, key: ExampleKey): string {
  mkdirSync(DATA, { recursive: true });
  const file = path.join(DATA, `${name}.jwks.json`);
  writeFileSync(file, JSON.stringify({ keys: [key.publicJwk] }));
  return file;
}

/**
 * The example's client at this issuer: the one registered on an earlier run if agentauth still
 * knows it, else a new one from `register` (remembered in examples/.data/<name>.clients.json).
 */
export async function registeredClient(cli: Cli, name: string, issuer: string, register: () => Promise<string>): Promise<string> {
  const file = path.join(DATA, `${name}.clients.json`);
  const known = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>) : {};
  const earlier = known[issuer];
  if (earlier && (await cli(['clients', 'show', earlier])).code === 0) return earlier;
  const clientId = await register();
  mkdirSync(DATA, { recursive: true });
  writeFileSync(file, JSON.stringify({ ...known, [issuer]: clientId }));
  return clientId;
}
