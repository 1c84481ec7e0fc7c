/**
 * A stateful model test of refresh rotation and revocation (SECURITY-TESTS Z-05): fast-check
 * generates sequences of what agents, thieves, users and operators do to token families
 * (refresh with the live token, its immediate predecessor or an older one, ten at once, revoke a
 * refresh or an access token, the user revokes the grant, introspect), runs them against the
 * server, and compares every answer with a model of docs/refresh-tokens.md:
 * - the live token rotates; its immediate predecessor, within the retry window, gets the same
 *   successor again (nothing minted); any older token is reuse and the whole grant dies (INV-1);
 * - a revoked or dead grant refreshes no more and none of its access tokens introspect active (INV-2);
 * - ten concurrent refreshes with the live token rotate it once (INV-6).
 * The retry window is 300 s and no step waits, so "within the window" always holds here; the
 * window's end is tested with a controllable clock in refresh-rotation.test.ts. Fixed seed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import * as client from 'openid-client';
import { codeFlowTokens } from './helpers/browserless.ts';
import { clientFor, createAgent, createScope, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const ADMIN_TOKEN = randomBytes(32).toString('base64url');

/** One grant's token family as the model sees it. */
interface Family {
  user: TestUser;
  /** Refresh tokens in the order they were issued; the last is the live one. */
  refreshTokens: string[];
  accessTokens: string[];
  alive: boolean;
}

interface Model {
  families: Family[];
}

interface Real {
  server: TestServer;
  config: client.Configuration;
}

const live = (f: Family) => f.refreshTokens.at(-1)!;

async function refresh(config: client.Configuration, token: string): Promise<client.TokenEndpointResponse | 'invalid_grant'> {
  try {
    return await client.refreshTokenGrant(config, token);
  } catch (err) {
    if (err instanceof client.ResponseBodyError && err.error === 'invalid_grant') return 'invalid_grant';
    throw err;
  }
}

async function active(config: client.Configuration, token: string): Promise<boolean> {
  return (await client.tokenIntrospection(config, token)).active;
}

/** After a family dies, none of its tokens is usable: every access token introspects inactive. */
async function assertDead(real: Real, f: Family): Promise<void> {
  for (const token of f.accessTokens) assert.equal(await active(real.config, token), false, 'an access token of a dead grant');
  assert.equal(await active(real.config, live(f)), false, 'the live refresh token of a dead grant');
}

/** Which token of a family a command presents: the live one, its predecessor, or an older one. */
type Which = 'live' | 'predecessor' | 'older';

/** A command on one of the model's families (chosen by index, whatever their number). */
abstract class FamilyCommand implements fc.AsyncCommand<Model, Real> {
  readonly family: number;
  constructor(family: number) {
    this.family = family;
  }
  check(_m: Readonly<Model>): boolean {
    return true;
  }
  protected familyOf(m: Readonly<Model>): Family {
    return m.families[this.family % m.families.length]!;
  }
  abstract run(m: Model, real: Real): Promise<void>;
  /** How fast-check prints the command in a failing sequence: Refresh(0, live). */
  toString(): string {
    return `${this.constructor.name}(${Object.values(this).join(', ')})`;
  }
}

class Refresh extends FamilyCommand {
  readonly which: Which;
  constructor(family: number, which: Which) {
    super(family);
    this.which = which;
  }
  override check(m: Readonly<Model>) {
    const f = this.familyOf(m);
    if (this.which === 'predecessor') return f.refreshTokens.length >= 2;
    if (this.which === 'older') return f.refreshTokens.length >= 3;
    return true;
  }
  override async run(m: Model, real: Real) {
    const f = this.familyOf(m);
    const index = { live: f.refreshTokens.length - 1, predecessor: f.refreshTokens.length - 2, older: 0 }[this.which];
    const answer = await refresh(real.config, f.refreshTokens[index]!);
    if (!f.alive) {
      assert.equal(answer, 'invalid_grant', 'a dead grant refreshes no more');
      return;
    }
    if (this.which === 'older') {
      assert.equal(answer, 'invalid_grant', 'an older token is reuse');
      f.alive = false;
      await assertDead(real, f);
      return;
    }
    assert.notEqual(answer, 'invalid_grant', `${this.which} of a live family`);
    const tokens = answer as client.TokenEndpointResponse;
    if (this.which === 'predecessor') {
      // The retry rule: the same successor again, and nothing new minted.
      assert.equal(tokens.refresh_token, live(f), 'a retry gets the live successor');
      return;
    }
    assert.ok(tokens.refresh_token && !f.refreshTokens.includes(tokens.refresh_token), 'a new refresh token');
    f.refreshTokens.push(tokens.refresh_token);
    f.accessTokens.push(tokens.access_token);
  }
}

class ConcurrentRefresh extends FamilyCommand {
  override async run(m: Model, real: Real) {
    const f = this.familyOf(m);
    const answers = await Promise.all(Array.from({ length: 10 }, () => refresh(real.config, live(f))));
    if (!f.alive) {
      assert.ok(
        answers.every((a) => a === 'invalid_grant'),
        'a dead grant refreshes no more',
      );
      return;
    }
    const successors = new Set(answers.map((a) => (a === 'invalid_grant' ? a : a.refresh_token)));
    assert.equal(successors.size, 1, `one rotation, one successor for all ten: ${[...successors].join(', ')}`);
    const [successor] = successors;
    assert.ok(successor !== 'invalid_grant' && successor !== undefined);
    f.refreshTokens.push(successor);
    f.accessTokens.push((answers[0] as client.TokenEndpointResponse).access_token);
  }
}

class Revoke extends FamilyCommand {
  readonly what: 'refresh token' | 'access token' | 'by the user';
  constructor(family: number, what: 'refresh token' | 'access token' | 'by the user') {
    super(family);
    this.what = what;
  }
  override async run(m: Model, real: Real) {
    const f = this.familyOf(m);
    if (this.what === 'by the user') {
      const { grants } = (await admin(real.server, 'GET', `/admin/users/${f.user.username}/grants`)) as { grants: { grant_id: string }[] };
      assert.equal(grants.length, f.alive ? 1 : 0, 'the user sees the grant while it lives, and not after');
      if (grants[0]) await admin(real.server, 'DELETE', `/admin/grants/${encodeURIComponent(grants[0].grant_id)}`);
    } else {
      // RFC 7009 §2.2: 200 whatever the token's state.
      await client.tokenRevocation(real.config, this.what === 'refresh token' ? live(f) : f.accessTokens.at(-1)!);
    }
    f.alive = false;
    await assertDead(real, f);
  }
}

class Introspect extends FamilyCommand {
  readonly index: number;
  constructor(family: number, index: number) {
    super(family);
    this.index = index;
  }
  override async run(m: Model, real: Real) {
    const f = this.familyOf(m);
    const token = f.accessTokens[this.index % f.accessTokens.length]!;
    // Rotation does not end an access token early; the grant's death does.
    assert.equal(await active(real.config, token), f.alive);
  }
}

async function admin(server: TestServer, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${server.issuer}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

describe('refresh rotation and revocation against a model (SECURITY-TESTS Z-05)', () => {
  let server: TestServer;
  let config: client.Configuration;

  before(async () => {
    server = await startServer({ ADMIN_TOKEN });
    await createScope(server, 'notes:read', 'Read your notes');
    const agent = await createAgent(server, {
      redirectUris: ['http://127.0.0.1/cb'],
      scope: 'notes:read',
      grantTypes: ['authorization_code', 'refresh_token'],
      refreshRetryWindow: 300,
    });
    config = await clientFor(server, agent);
  });
  after(() => server?.stop());

  /** A new family: a new user signs in and consents, and the code is redeemed. */
  async function newFamily(): Promise<Family> {
    const user = { username: `u-${randomBytes(5).toString('hex')}`, password: randomBytes(12).toString('base64url'), id: '' };
    await admin(server, 'POST', '/admin/users', { username: user.username, password: user.password });
    const tokens = await codeFlowTokens(server.issuer, config, user, { scope: 'notes:read' });
    assert.ok(tokens.refresh_token, 'the code exchange issues a refresh token');
    return { user, refreshTokens: [tokens.refresh_token], accessTokens: [tokens.access_token], alive: true };
  }

  it('answers every sequence of refreshes, retries, reuses, revocations and introspections as the model says', async () => {
    const family = fc.nat({ max: 1 });
    const commands = [
      // Refreshes weigh most: a revocation ends a family's story.
      fc.tuple(family, fc.constantFrom<Which>('live', 'predecessor', 'older')).map(([f, w]) => new Refresh(f, w)),
      fc.tuple(family, fc.constantFrom<Which>('live', 'predecessor')).map(([f, w]) => new Refresh(f, w)),
      family.map((f) => new Refresh(f, 'live')),
      family.map((f) => new Refresh(f, 'older')),
      family.map((f) => new ConcurrentRefresh(f)),
      fc.tuple(family, fc.constantFrom('refresh token' as const, 'access token' as const, 'by the user' as const)).map(([f, w]) => new Revoke(f, w)),
      fc.tuple(family, fc.nat()).map(([f, i]) => new Introspect(f, i)),
    ];
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 14, size: 'large' }), async (sequence) => {
        const model: Model = { families: [await newFamily(), await newFamily()] };
        await fc.asyncModelRun(() => ({ model, real: { server, config } }), sequence);
      }),
      { numRuns: 10, seed: 20261201, endOnFailure: true, includeErrorInReport: true },
    );
  });
});
