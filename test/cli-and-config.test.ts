/**
 * The `agentauth` command while the server runs, discovery, key rotation without a restart,
 * and start-up refusals: a bad environment value, a second opener of the embedded data.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as client from 'openid-client';
import { authorize } from './helpers/browserless.ts';
import { clientFor, createAgent, createUser } from './helpers/factories.ts';
import { newDeployment, REAL_SERVICES, runCli, spawnServer, startServer, stopProcess, type TestServer } from './helpers/server.ts';

describe('the agentauth command against a running server', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  it('prints help for every command and exits 0', async () => {
    for (const args of [
      ['--help'],
      ['migrate', '--help'],
      ['users', 'create', '--help'],
      ['scopes', 'create', '--help'],
      ['scopes', 'list', '--help'],
      ['clients', 'create', '--help'],
      ['clients', 'list', '--help'],
      ['clients', 'show', '--help'],
      ['keys', 'rotate', '--help'],
    ]) {
      const r = await server.cli(args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /agentauth/);
    }
  });

  it('prints exactly one JSON object with --json', async () => {
    for (const args of [
      ['scopes', 'create', 'files:read', '--description', 'Read your files', '--json'],
      ['scopes', 'list', '--json'],
      ['clients', 'list', '--json'],
      ['migrate', '--json'],
    ]) {
      const r = await server.cli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      const parsed: unknown = JSON.parse(r.stdout);
      assert.equal(typeof parsed, 'object');
      assert.equal(r.stdout.trim().split('\n').length, 1);
    }
  });

  it('exits non-zero with one clear line on bad input', async () => {
    const cases: [string[], RegExp, string?][] = [
      [['bogus'], /unknown command "bogus"/],
      [['scopes', 'create'], /expected <name>/],
      [['scopes', 'create', 'has space', '--description', 'x'], /name must be/],
      [['scopes', 'create', 'ok', '--description', 'x', '--colour', 'red'], /Unknown option '--colour'/],
      [['users', 'create', 'bob'], /--password-stdin is required/],
      [['users', 'create', 'bob', '--password-stdin'], /password must be at least 8 characters/, 'short'],
      [['clients', 'create', '--name', 'x', '--redirect-uri', 'http://evil.example/cb', '--public'], /invalid_redirect_uri/],
      [['clients', 'create', '--name', 'x', '--redirect-uri', 'https://a.example/cb#frag', '--public'], /fragment/],
      [['clients', 'create', '--name', 'x', '--redirect-uri', 'https://user@a.example/cb', '--public'], /userinfo/],
      [['clients', 'create', '--name', 'x', '--redirect-uri', 'https://*.example/cb', '--public'], /wildcard/],
      [['clients', 'create', '--name', 'x', '--redirect-uri', 'https://a.example/cb'], /exactly one of --jwks-file, --jwks-uri or --public/],
      [['clients', 'create', '--name', 'x', '--jwks-file', '/nonexistent.json'], /cannot read --jwks-file/],
      [['clients', 'create', '--name', 'x', '--public', '--redirect-uri', 'https://a.example/cb', '--scope', 'never:created'], /unknown scope never:created/],
      [['clients', 'create', '--name', 'x', '--public', '--grant-types', 'client_credentials'], /public client cannot use the client_credentials/],
      [['clients', 'create', '--name', 'x', '--public', '--redirect-uri', 'https://a.example/cb', '--grant-types', 'password'], /grantTypes/],
      [['clients', 'show', 'agt_nope'], /no client agt_nope/],
    ];
    for (const [args, message, stdin] of cases) {
      const r = await server.cli(args, stdin);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    }
  });

  it('takes an identifier that begins with "-" as the identifier, not as an option (grant ids are random base64url)', async () => {
    const dashed = await server.cli(['grants', 'revoke', '-Xk3dDashedGrantId0000000000', '--json']);
    assert.equal(dashed.code, 1, dashed.stderr);
    assert.equal(JSON.parse(dashed.stdout).error, 'not_found');
    const typo = await server.cli(['scopes', 'list', '--jsn']);
    assert.equal(typo.code, 2, 'an unknown option is still a usage error');
  });

  it('reports a bad input as one JSON object on stdout with --json', async () => {
    const r = await server.cli(['clients', 'show', 'agt_nope', '--json']);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout), { error: 'not_found', error_description: 'no client agt_nope' });
  });

  it('makes a new scope, user and client usable at once, without a restart', async () => {
    const r = await server.cli(['scopes', 'create', 'calendar:read', '--description', 'See your calendar', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const metadata = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
    assert.ok(metadata.scopes_supported.includes('calendar:read'));
    const user = await createUser(server);
    const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'calendar:read' });
    const config = await clientFor(server, agent);
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1/cb',
      scope: 'calendar:read',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { callback, consentHtml } = await authorize(server.issuer, url, user);
    assert.match(consentHtml, /See your calendar/);
    const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
    assert.equal(tokens.scope, 'calendar:read');
  });

  it('shows and lists clients', async () => {
    const agent = await createAgent(server, { name: 'Listed agent', grantTypes: ['client_credentials'] });
    const shown = JSON.parse((await server.cli(['clients', 'show', agent.clientId, '--json'])).stdout) as Record<string, unknown>;
    assert.equal(shown.client_id, agent.clientId);
    assert.equal(shown.client_name, 'Listed agent');
    assert.equal(shown.token_endpoint_auth_method, 'private_key_jwt');
    const listed = JSON.parse((await server.cli(['clients', 'list', '--json'])).stdout) as { clients: { client_id: string }[] };
    assert.ok(listed.clients.some((c) => c.client_id === agent.clientId));
  });

  it('publishes metadata that says what holds (RFC 8414)', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const res = await fetch(server.issuer + path);
      assert.equal(res.status, 200);
      const m = (await res.json()) as Record<string, unknown>;
      assert.equal(m.issuer, server.issuer);
      assert.deepEqual(m.code_challenge_methods_supported, ['S256']);
      assert.deepEqual(m.response_types_supported, ['code']);
      assert.deepEqual(
        new Set(m.grant_types_supported as string[]),
        new Set([
          'authorization_code',
          'refresh_token',
          'client_credentials',
          'urn:openid:params:grant-type:ciba',
          'urn:ietf:params:oauth:grant-type:device_code',
          'urn:ietf:params:oauth:grant-type:token-exchange',
        ]),
      );
      assert.deepEqual(new Set(m.token_endpoint_auth_methods_supported as string[]), new Set(['private_key_jwt', 'none']));
      assert.equal(m.authorization_response_iss_parameter_supported, true);
      assert.ok(m.introspection_endpoint && m.revocation_endpoint && m.jwks_uri);
    }
  });

  it('issue-13: metadata names how introspection and revocation authenticate clients (RFC 8414 §2)', async () => {
    const m = (await (await fetch(`${server.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    for (const endpoint of ['introspection', 'revocation']) {
      assert.deepEqual(new Set(m[`${endpoint}_endpoint_auth_methods_supported`] as string[]), new Set(['private_key_jwt', 'none']), endpoint);
      assert.deepEqual(m[`${endpoint}_endpoint_auth_signing_alg_values_supported`], m.token_endpoint_auth_signing_alg_values_supported, endpoint);
    }
  });

  it('rotates the signing key; the running server publishes old and new keys', async () => {
    const before = (await (await fetch(`${server.issuer}/jwks`)).json()) as { keys: { kid: string; d?: string }[] };
    const r = await server.cli(['keys', 'rotate', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { kid } = JSON.parse(r.stdout) as { kid: string };
    const after = (await (await fetch(`${server.issuer}/jwks`)).json()) as { keys: { kid: string; d?: string }[] };
    assert.ok(
      after.keys.some((k) => k.kid === kid),
      'the new key is published at once',
    );
    assert.equal(after.keys[0]!.kid, before.keys[0]!.kid, 'the old key signs until the propagation delay has passed');
    for (const old of before.keys)
      assert.ok(
        after.keys.some((k) => k.kid === old.kid),
        'old keys stay published',
      );
    assert.ok(
      after.keys.every((k) => k.d === undefined),
      'no private parts',
    );
  });

  it('answers health and readiness', async () => {
    assert.deepEqual(await (await fetch(`${server.issuer}/healthz`)).json(), { status: 'ok' });
    const ready = await fetch(`${server.issuer}/readyz`);
    assert.equal(ready.status, 200);
  });
});

describe('start-up refusals', () => {
  it('stops with one line naming a bad environment value', async () => {
    const deployment = await newDeployment();
    try {
      for (const [name, value] of [
        ['PORT', 'eighty'],
        ['ACCESS_TOKEN_TTL', '-5'],
        ['ISSUER', 'ftp://x'],
        ['TRUST_PROXY', 'maybe'],
        // Fewer would leave requests none while the background work (purge, sealer, delivery) runs.
        ['DATABASE_POOL_SIZE', '3'],
      ] as const) {
        const error = await spawnServer({ ...deployment.env, [name]: value }).then(
          () => assert.fail('the server started'),
          (err: Error) => err.message,
        );
        assert.match(error, new RegExp(`invalid configuration: .*${name}`));
        assert.match(error, /exited with 1/);
        assert.doesNotMatch(error, /at [\w.]+ \(/, 'no stack trace');
      }
    } finally {
      await deployment.cleanup();
    }
  });

  it('issue-14: refuses a CONFIG_POLL_INTERVAL that setInterval would turn into 1 ms', async () => {
    const deployment = await newDeployment();
    try {
      // 25 days: under the old 366-day bound, over what a timer can wait (24.8 days).
      const error = await spawnServer({ ...deployment.env, CONFIG_POLL_INTERVAL: String(25 * 24 * 3600) }).then(
        () => assert.fail('the server started'),
        (err: Error) => err.message,
      );
      assert.match(error, /invalid configuration: .*CONFIG_POLL_INTERVAL/);
    } finally {
      await deployment.cleanup();
    }
  });

  it('refuses a second process on the same embedded data directory', async (t) => {
    const deployment = await newDeployment();
    if (REAL_SERVICES) {
      // The embedded default is tested on its own run; here use a fresh embedded directory.
      delete deployment.env.DATABASE_URL;
      delete deployment.env.REDIS_URL;
      deployment.env.DATA_DIR = (await import('node:fs')).mkdtempSync(`${(await import('node:os')).tmpdir()}/agentauth-lock-`);
    }
    const first = await spawnServer({ ...deployment.env, PORT: '0' });
    t.after(async () => {
      await stopProcess(first.child);
      await deployment.cleanup();
    });
    const error = await spawnServer({ ...deployment.env, PORT: '0' }).then(
      () => assert.fail('a second server started'),
      (err: Error) => err.message,
    );
    assert.match(error, /is in use by another agentauth process \(pid \d+\)/);
    // The CLI still works: it goes through the running server.
    const r = await runCli(deployment.env, ['scopes', 'list', '--json']);
    assert.equal(r.code, 0, r.stderr);
  });
});
