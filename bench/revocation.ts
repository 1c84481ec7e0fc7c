/**
 * Revocation timing, measured outside the tests (issue: connected agents):
 * 1. from the user's "Revoke" POST on /account to introspection answering active: false;
 * 2. from that POST to the signed event reaching a local receiver;
 * 3. a receiver down for OUTAGE seconds (default 60) gets every event once it is back.
 *
 *   DATABASE_URL=… REDIS_URL=… node bench/revocation.ts [--rounds 50] [--outage 60]
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import { browse, codeFlowTokens, CookieJar, csrfOf, followOnIssuer, postForm } from '../test/helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser, type TestUser } from '../test/helpers/factories.ts';
import { startServer, type TestServer } from '../test/helpers/server.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '50' }, outage: { type: 'string', default: '60' } } });
const rounds = Number(values.rounds);
const outageSeconds = Number(values.outage);

const received = new Map<string, number>(); // client_id → arrival time
const jtis = new Set<string>();
let down = false;
const receiver = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d: Buffer) => {
    body += d;
  });
  req.on('end', () => {
    if (down) return void res.writeHead(503).end();
    const claims = JSON.parse(Buffer.from(body.split('.')[1]!, 'base64url').toString()) as { aud: string; jti: string };
    if (!received.has(claims.aud)) received.set(claims.aud, performance.now());
    jtis.add(claims.jti);
    res.writeHead(202).end();
  });
});
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/events`;

const server = await startServer({ ALLOW_PRIVATE_FETCH: 'true', LOG_LEVEL: 'warn', REGISTRATION_RATE_LIMIT: '100000', LOGIN_FAILURE_LIMIT: '100000' });
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function connect(user: TestUser) {
  const agent = await createAgent(server, { redirectUris: ['http://127.0.0.1/cb'], scope: 'bench:read' });
  await server.cli(['clients', 'update', agent.clientId, '--event-uri', receiverUrl]);
  const config = await clientFor(server, agent);
  return { agent, config, tokens: await codeFlowTokens(server.issuer, config, user, { scope: 'bench:read' }) };
}

async function accountJar(target: TestServer, user: TestUser): Promise<CookieJar> {
  const jar = new CookieJar();
  const res = await followOnIssuer(jar, target.issuer, await browse(jar, `${target.issuer}/account`));
  const html = await res.text();
  const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
  if (login)
    await followOnIssuer(
      jar,
      target.issuer,
      await postForm(jar, `${target.issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }),
    );
  return jar;
}

async function revokeOnPage(jar: CookieJar, clientId: string): Promise<number> {
  const page = await (await browse(jar, `${server.issuer}/account`)).text();
  const path = new RegExp(`<code>${clientId}</code>[\\s\\S]*?href="(/account/agents/[^"]+/revoke)"`).exec(page)![1]!;
  const confirm = await (await browse(jar, `${server.issuer}${path}`)).text();
  const clicked = performance.now();
  await postForm(jar, `${server.issuer}${path}`, { csrf: csrfOf(confirm) });
  return clicked;
}

try {
  await createScope(server, 'bench:read', 'Bench');
  const user = await createUser(server);
  const jar = await accountJar(server, user);
  const toInactive: number[] = [];
  const toEvent: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const { agent, config, tokens } = await connect(user);
    const clicked = await revokeOnPage(jar, agent.clientId);
    while ((await client.tokenIntrospection(config, tokens.access_token)).active) {
      /* poll */
    }
    toInactive.push(performance.now() - clicked);
    while (!received.has(agent.clientId)) await new Promise((resolve) => setTimeout(resolve, 5));
    toEvent.push(received.get(agent.clientId)! - clicked);
  }

  // A receiver that is down for the outage: every event revoked meanwhile arrives afterwards.
  down = true;
  const pending: string[] = [];
  const outageStart = performance.now();
  for (let i = 0; i < 20; i++) {
    const { agent } = await connect(user);
    await revokeOnPage(jar, agent.clientId);
    pending.push(agent.clientId);
  }
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, outageSeconds * 1000 - (performance.now() - outageStart))));
  down = false;
  const back = performance.now();
  while (!pending.every((c) => received.has(c)) && performance.now() - back < 600_000) await new Promise((resolve) => setTimeout(resolve, 50));
  const allArrived = pending.every((c) => received.has(c));
  process.stdout.write(
    `${JSON.stringify({
      storage: server.env.DATABASE_URL ? 'postgres+redis' : 'embedded',
      rounds,
      revoke_to_introspection_inactive_ms: {
        p50: percentile(toInactive, 50).toFixed(1),
        p99: percentile(toInactive, 99).toFixed(1),
        max: Math.max(...toInactive).toFixed(1),
      },
      revoke_to_event_received_ms: { p50: percentile(toEvent, 50).toFixed(1), p99: percentile(toEvent, 99).toFixed(1), max: Math.max(...toEvent).toFixed(1) },
      outage: {
        seconds: outageSeconds,
        events: pending.length,
        all_delivered_after: allArrived,
        seconds_to_last_after_recovery: ((Math.max(...pending.map((c) => received.get(c) ?? Infinity)) - back) / 1000).toFixed(1),
      },
    })}\n`,
  );
} finally {
  receiver.close();
  await server.stop();
}
