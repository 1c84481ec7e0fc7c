/**
 * `docker compose up` works on the first try: after `agentauth init` writes the secrets into
 * .env, the environment docker-compose.yml gives the server (with the Dockerfile's ENV) is one
 * the server's configuration accepts, and every variable the compose file requires is one that
 * `init` provides. (No Docker engine here: the files are read as text.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { ASYNC_CONTEXT_FRAME, serverNodeFlags } from '../src/node-flags.ts';
import { ROOT, runCli } from './helpers/server.ts';

/** The `x-agentauth-env` block's `NAME: value` lines. */
function composeEnvironment(): Record<string, string> {
  const lines = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8').split('\n');
  const start = lines.findIndex((l) => l.startsWith('x-agentauth-env:'));
  assert.notEqual(start, -1, 'docker-compose.yml has an x-agentauth-env block');
  const env: Record<string, string> = {};
  for (const line of lines.slice(start + 1)) {
    const m = /^\s{2}([A-Z_]+):\s*(.*)$/.exec(line);
    if (!m) break;
    env[m[1]!] = m[2]!.trim();
  }
  return env;
}

function dockerfileEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').split('\n')) {
    if (!line.startsWith('ENV ')) continue;
    for (const pair of line.slice(4).trim().split(/\s+/)) {
      const [name, value] = pair.split('=');
      if (name && value !== undefined) env[name] = value;
    }
  }
  return env;
}

/** Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}. */
function interpolate(value: string, dotenv: Record<string, string>, required: Set<string>): string {
  return value.replace(/\$\{([A-Z_]+)(?::([-?])([^}]*))?\}/g, (_all, name: string, op?: string, arg?: string) => {
    if (dotenv[name] !== undefined) return dotenv[name]!;
    if (op === '?') {
      required.add(name);
      throw new Error(`${name} is required: ${arg}`);
    }
    return op === '-' ? (arg ?? '') : '';
  });
}

describe('docker compose', () => {
  it('gives the server a configuration it accepts once agentauth init wrote .env', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'agentauth-compose-'));
    const envFile = path.join(dir, '.env');
    const init = await runCli({ ...process.env }, ['init', '--out', envFile]);
    assert.equal(init.code, 0, init.stderr);
    const dotenv = Object.fromEntries(
      readFileSync(envFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );

    const required = new Set<string>();
    const composed = Object.fromEntries(Object.entries(composeEnvironment()).map(([k, v]) => [k, interpolate(v, dotenv, required)]));
    const env = { ...dockerfileEnvironment(), ...composed };
    assert.ok(env.DATABASE_URL?.startsWith('postgres://'), 'compose runs on PostgreSQL');
    assert.doesNotThrow(() => loadConfig(env));

    // Every variable compose insists on is one init writes; without .env it names them.
    assert.deepEqual(Object.keys(dotenv).sort(), ['COOKIE_KEYS', 'KEY_ENCRYPTION_KEY']);
    const missing = new Set<string>();
    for (const value of Object.values(composeEnvironment())) {
      try {
        interpolate(value, {}, missing);
      } catch {
        /* recorded */
      }
    }
    assert.deepEqual([...missing].sort(), ['COOKIE_KEYS', 'KEY_ENCRYPTION_KEY']);
  });

  it('runs the server and the migrations with the same environment', () => {
    const text = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8');
    assert.equal(text.match(/environment: \*agentauth-env/g)?.length, 2);
    assert.match(text, /command: \["node", "bin\/agentauth\.js", "migrate"\]/);
  });

  it('starts the server in the image with the Node flags the tests and the benchmark start it with', () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = dockerfile.match(/^CMD (\[.*\])$/m)?.[1];
    assert.ok(cmd, 'the Dockerfile has a CMD');
    // The image is Node 22, where serverNodeFlags() gives the AsyncContextFrame flag.
    assert.match(dockerfile, /^FROM node:22[-@]/m);
    assert.deepEqual(JSON.parse(cmd), ['node', ASYNC_CONTEXT_FRAME, 'bin/start.js']);
    if (process.versions.node.startsWith('22.')) assert.deepEqual(serverNodeFlags(), [ASYNC_CONTEXT_FRAME]);
  });
});
