/**
 * Token endpoint throughput: client_credentials with private_key_jwt, a fresh pre-signed
 * assertion per request, at fixed concurrency. Starts its own server (PostgreSQL and Redis when
 * DATABASE_URL / REDIS_URL are set, else the embedded default).
 *
 *   node bench/token-endpoint.ts [--seconds 10] [--concurrency 16] [--server-dir <checkout>]
 *
 * --server-dir runs another checkout's server with the same load, for before/after comparisons.
 * --cpu-prof-dir writes the server's CPU profile there (node --cpu-prof).
 */
import { createSign, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, newDeployment, runCli, spawnServer } from '../test/helpers/server.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '16' },
    'server-dir': { type: 'string' },
    'cpu-prof-dir': { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const serverDir = values['server-dir'] ? path.resolve(values['server-dir']) : path.resolve(import.meta.dirname, '..');

const b64 = (v: string | Buffer) => Buffer.from(v).toString('base64url');

function signAssertion(privateKey: KeyObject, kid: string, clientId: string, audience: string): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: 'ES256', kid, typ: 'JWT' }));
  const payload = b64(JSON.stringify({ iss: clientId, sub: clientId, aud: audience, jti: randomBytes(16).toString('base64url'), iat: now, exp: now + 240 }));
  const signature = createSign('sha256').update(`${header}.${payload}`).sign({ key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${header}.${payload}.${b64(signature)}`;
}

async function main(): Promise<void> {
  const deployment = await newDeployment();
  const port = await freePort();
  const issuer = `http://localhost:${port}`;
  const env: NodeJS.ProcessEnv = { ...deployment.env, PORT: String(port), ISSUER: issuer, LOG_LEVEL: 'warn' };
  if (values['cpu-prof-dir']) env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${path.resolve(values['cpu-prof-dir'])}`;
  const { child } = await spawnServer(env, serverDir);
  try {
    const cli = (args: string[]) => runCli(env, args);
    await cli(['scopes', 'create', 'bench:run', '--description', 'Benchmark']);
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = 'bench';
    const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-bench-'));
    writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] }));
    const created = await cli([
      'clients',
      'create',
      '--name',
      'bench',
      '--grant-types',
      'client_credentials',
      '--scope',
      'bench:run',
      '--jwks-file',
      path.join(dir, 'jwks.json'),
      '--rate-limit',
      '1000000',
      '--json',
    ]);
    const clientId = (JSON.parse(created.stdout) as { client_id: string }).client_id;

    const expected = Math.ceil(seconds * 4000) + 2000;
    const assertions = Array.from({ length: expected }, () => signAssertion(privateKey, kid, clientId, issuer));
    let next = 0;
    const request = async () => {
      const body = new URLSearchParams({
        grant_type: 'client_credentials',
        scope: 'bench:run',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertions[next++]!,
      });
      const started = performance.now();
      const res = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      await res.arrayBuffer();
      return { ms: performance.now() - started, ok: res.status === 200 };
    };
    const run = async (durationMs: number) => {
      const latencies: number[] = [];
      let errors = 0;
      const end = performance.now() + durationMs;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end && next < assertions.length) {
            const r = await request();
            if (r.ok) latencies.push(r.ms);
            else errors++;
          }
        }),
      );
      return { latencies, errors };
    };
    await run(2_000); // warm-up
    const { latencies, errors } = await run(seconds * 1000);
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!.toFixed(2);
    const result = {
      server: serverDir,
      storage: env.DATABASE_URL ? 'postgres+redis' : 'embedded',
      concurrency,
      seconds,
      requests: latencies.length,
      errors,
      rps: Math.round(latencies.length / seconds),
      p50_ms: pct(50),
      p99_ms: pct(99),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    await deployment.cleanup();
  }
}

await main();
