/**
 * Keys for agents with nothing but this package: `clients create --generate-key` writes the
 * private JWK (mode 0600, never printed, never replacing a file) and registers its public half;
 * `keys generate` makes a pair for a jwks_uri setup. Each key then authenticates with
 * openid-client. And on an old Node, the command and the server say which Node they need.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { importJWK } from 'jose';
import * as client from 'openid-client';
import { createScope } from './helpers/factories.ts';
import { ROOT, startServer, type TestServer } from './helpers/server.ts';
import { createTestHost, testHostEnv, testHostsUnavailable, type TestHost } from './helpers/test-host.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-keys-'));

async function tokenWith(server: TestServer, clientId: string, keyFile: string): Promise<string> {
  const jwk = JSON.parse(readFileSync(keyFile, 'utf8')) as { kid: string; alg?: string; kty: string };
  const key = (await importJWK(jwk, jwk.alg ?? 'Ed25519')) as CryptoKey;
  const config = await client.discovery(new URL(server.issuer), clientId, undefined, client.PrivateKeyJwt({ key, kid: jwk.kid }), {
    execute: [client.allowInsecureRequests],
  });
  return (await client.clientCredentialsGrant(config, { scope: 'sync:run' })).access_token;
}

describe('keys for agents', () => {
  let server: TestServer;
  let jwksHost: TestHost | undefined;
  const served: { body: unknown } = { body: { keys: [] } };
  before(async () => {
    if (!testHostsUnavailable)
      jwksHost = await createTestHost('agent-keys', (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(served.body)));
    server = await startServer(testHostsUnavailable ? {} : testHostEnv());
    await createScope(server, 'sync:run', 'Sync');
  });
  after(async () => {
    await jwksHost?.close();
    await server?.stop();
  });

  /** `clients create` for a client_credentials agent whose key pair the CLI makes into `file`. */
  const createWithKey = (name: string, scope: string, file: string, ...extra: string[]) =>
    server.cli(['clients', 'create', '--name', name, '--grant-types', 'client_credentials', '--scope', scope, '--generate-key', file, ...extra]);

  it('clients create --generate-key writes a private JWK only its owner can read, registers the public half, and prints no private part', async () => {
    const file = path.join(dir, 'agent.jwk.json');
    const made = await createWithKey('Keyed agent', 'sync:run', file, '--json');
    assert.equal(made.code, 0, made.stderr);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const privateJwk = JSON.parse(readFileSync(file, 'utf8')) as { d: string; kid: string; alg: string };
    assert.equal(privateJwk.alg, 'ES256');
    assert.ok(privateJwk.d);
    assert.ok(!made.stdout.includes(privateJwk.d) && !made.stderr.includes(privateJwk.d), 'the private key is never printed');
    const metadata = JSON.parse(made.stdout) as { client_id: string; jwks: { keys: { kid: string; d?: string }[] } };
    assert.equal(metadata.jwks.keys.length, 1);
    assert.equal(metadata.jwks.keys[0]!.kid, privateJwk.kid);
    assert.equal(metadata.jwks.keys[0]!.d, undefined);
    assert.ok(await tokenWith(server, metadata.client_id, file));
  });

  it('never replaces an existing file, and then registers nothing', async () => {
    const file = path.join(dir, 'existing.json');
    writeFileSync(file, 'the only copy of something');
    const before = JSON.parse((await server.cli(['clients', 'list', '--json'])).stdout) as { clients: unknown[] };
    const made = await server.cli(['clients', 'create', '--name', 'Clobber', '--grant-types', 'client_credentials', '--generate-key', file]);
    assert.equal(made.code, 2);
    assert.match(made.stderr, /exists; refusing to overwrite a private key/);
    assert.equal(readFileSync(file, 'utf8'), 'the only copy of something');
    const afterList = JSON.parse((await server.cli(['clients', 'list', '--json'])).stdout) as { clients: unknown[] };
    assert.equal(afterList.clients.length, before.clients.length);
  });

  it('removes the key file when the registration is refused', async () => {
    const file = path.join(dir, 'refused.json');
    const made = await createWithKey('Refused', 'no:such-scope', file);
    assert.equal(made.code, 1);
    assert.equal(existsSync(file), false);
  });

  it('keys generate makes an EdDSA pair for a jwks_uri: the printed set has no private part and the key authenticates', {
    skip: testHostsUnavailable,
  }, async () => {
    const file = path.join(dir, 'published.jwk.json');
    const generated = await server.cli(['keys', 'generate', '--out', file, '--alg', 'EdDSA', '--json']);
    assert.equal(generated.code, 0, generated.stderr);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const jwks = JSON.parse(generated.stdout) as { keys: { kty: string; crv: string; d?: string }[] };
    assert.equal(jwks.keys[0]!.crv, 'Ed25519');
    assert.equal(jwks.keys[0]!.d, undefined);
    served.body = jwks;
    const made = await server.cli([
      'clients',
      'create',
      '--name',
      'Published keys',
      '--grant-types',
      'client_credentials',
      '--scope',
      'sync:run',
      '--jwks-uri',
      `${jwksHost!.origin}/jwks.json`,
      '--json',
    ]);
    assert.equal(made.code, 0, made.stderr);
    assert.ok(await tokenWith(server, (JSON.parse(made.stdout) as { client_id: string }).client_id, file));
  });
});

/** The machine's own Node (this machine's is 20), if it has one besides the one running the tests. */
const oldNode = (): string | undefined => ['/usr/bin/node', '/usr/local/bin/node'].find((candidate) => existsSync(candidate));

describe('on an old Node', () => {
  const node = oldNode();
  it('npm start and agentauth say in one line which Node they need', async (t) => {
    if (!node) return t.skip('no Node older than 22 on this machine');
    const version = (await promisify(execFile)(node, ['-p', 'process.versions.node'])).stdout.trim();
    if (Number(version.split('.')[0]) >= 22) return t.skip(`${node} is Node ${version}`);
    for (const script of ['bin/agentauth.js', 'bin/start.js']) {
      const result: { code: number; stderr: string } = await promisify(execFile)(node, [path.join(ROOT, script), '--help']).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => err,
      );
      assert.equal(result.code, 1, script);
      assert.equal(result.stderr.trim().split('\n').length, 1, script);
      assert.match(
        result.stderr,
        new RegExp(`needs Node\\.js 22\\.18 or newer .* this is Node\\.js ${version.replaceAll('.', '\\.')}\\. Install Node 22`),
        script,
      );
    }
  });
});
