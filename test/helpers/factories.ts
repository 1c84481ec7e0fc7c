/** Test factories: scopes, users and agents created through the real CLI. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as client from 'openid-client';
import type { TestServer } from './server.ts';

/** What the factories need of a running deployment: its CLI and its issuer. */
export type Target = Pick<TestServer, 'cli' | 'issuer'>;

export interface TestUser {
  id: string;
  username: string;
  password: string;
}

export interface TestAgent {
  clientId: string;
  metadata: Record<string, unknown>;
  privateKey?: CryptoKey;
  kid?: string;
}

function ok(result: { code: number; stdout: string; stderr: string }, what: string): string {
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

/** `allowUnverified`: self-registered clients (open registration, metadata documents) may request it. */
export async function createScope(server: Target, name: string, description: string, options: { allowUnverified?: boolean } = {}): Promise<void> {
  const args = ['scopes', 'create', name, '--description', description, '--json'];
  if (options.allowUnverified) args.push('--allow-unverified');
  ok(await server.cli(args), 'scopes create');
}

export async function createUser(server: Target, username = `user-${randomBytes(4).toString('hex')}`): Promise<TestUser> {
  const password = `pw-${randomBytes(12).toString('base64url')}`;
  const created = JSON.parse(ok(await server.cli(['users', 'create', username, '--password-stdin', '--json'], password), 'users create')) as { id: string };
  return { id: created.id, username, password };
}

export async function generateAgentKey(): Promise<{ privateKey: CryptoKey; publicJwk: Record<string, unknown> & { kid: string } }> {
  const { privateKey, publicKey } = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as {
    privateKey: CryptoKey;
    publicKey: CryptoKey;
  };
  const kid = randomBytes(8).toString('hex');
  return {
    privateKey,
    publicJwk: { ...(await crypto.subtle.exportKey('jwk', publicKey)), kid, alg: 'ES256', use: 'sig' } as Record<string, unknown> & { kid: string },
  };
}

export interface AgentOptions {
  name?: string;
  redirectUris?: string[];
  scope?: string;
  grantTypes?: string[];
  public?: boolean;
  /** Register these public keys instead of a generated one. */
  jwks?: { keys: Record<string, unknown>[] };
  jwksUri?: string;
  /** Seconds the previous refresh token still gets the same successor; 0 is strict. */
  refreshRetryWindow?: number;
  /** CIBA ping mode: where the agent is told its user answered. */
  cibaPingUri?: string;
}

export async function createAgent(server: Target, options: AgentOptions = {}): Promise<TestAgent> {
  const args = ['clients', 'create', '--name', options.name ?? 'Test agent', '--json'];
  for (const uri of options.redirectUris ?? []) args.push('--redirect-uri', uri);
  if (options.scope) args.push('--scope', options.scope);
  if (options.grantTypes) args.push('--grant-types', options.grantTypes.join(','));
  if (options.refreshRetryWindow !== undefined) args.push('--refresh-retry-window', String(options.refreshRetryWindow));
  if (options.cibaPingUri) args.push('--ciba-ping-uri', options.cibaPingUri);
  let key: Awaited<ReturnType<typeof generateAgentKey>> | undefined;
  if (options.public) {
    args.push('--public');
  } else if (options.jwksUri) {
    args.push('--jwks-uri', options.jwksUri);
  } else {
    key = options.jwks ? undefined : await generateAgentKey();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-jwks-'));
    const file = path.join(dir, 'jwks.json');
    writeFileSync(file, JSON.stringify(options.jwks ?? { keys: [key!.publicJwk] }));
    args.push('--jwks-file', file);
  }
  const metadata = JSON.parse(ok(await server.cli(args), 'clients create')) as Record<string, unknown>;
  return { clientId: String(metadata.client_id), metadata, privateKey: key?.privateKey, kid: key?.publicJwk.kid };
}

/** An openid-client configuration for the agent, authenticating as it registered. */
export async function clientFor(server: Target, agent: TestAgent): Promise<client.Configuration> {
  const auth = agent.privateKey ? client.PrivateKeyJwt({ key: agent.privateKey, kid: agent.kid }) : client.None();
  const config = await client.discovery(new URL(server.issuer), agent.clientId, undefined, auth, { execute: [client.allowInsecureRequests] });
  return config;
}
