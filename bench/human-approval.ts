/**
 * Human approval timing (issue 19), measured outside the tests: from the user's "Approve" POST
 * on /account to the agent holding its token,
 * 1. poll mode: the agent polls at the interval the server gives (APPROVAL_POLL_INTERVAL);
 * 2. ping mode: the agent asks for its token as soon as the ping reaches it.
 *
 *   DATABASE_URL=… REDIS_URL=… node bench/human-approval.ts [--rounds 20] [--interval 5]
 */
import type http from 'node:http';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import { signInToAccount, waitingIds, type AccountSession } from '../test/helpers/account.ts';
import { csrfOf, postForm } from '../test/helpers/browserless.ts';
import { clientFor, createAgent, createScope, createUser } from '../test/helpers/factories.ts';
import { startServer } from '../test/helpers/server.ts';
import { createTestHost, testHostEnv } from '../test/helpers/test-host.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '20' }, interval: { type: 'string', default: '5' } } });
const rounds = Number(values.rounds);
const CIBA_GRANT = 'urn:openid:params:grant-type:ciba';

// The agent's ping receiver: resolves whoever waits for that auth_req_id.
const pinged = new Map<string, () => void>();
// An https host of its own (test/helpers/test-host.ts: root, a network namespace, a test CA), as
// oidc-provider requires https for a notification endpoint and production reaches agents.
const receiver = await createTestHost('bench-agent', (req: http.IncomingMessage, res: http.ServerResponse) => {
  let body = '';
  req.on('data', (d: Buffer) => {
    body += d;
  });
  req.on('end', () => {
    res.writeHead(204).end();
    const { auth_req_id: id } = JSON.parse(body) as { auth_req_id: string };
    pinged.get(id)?.();
  });
});
const pingUri = `${receiver.origin}/ciba`;

const server = await startServer({ ...testHostEnv(), LOG_LEVEL: 'warn', APPROVAL_POLL_INTERVAL: values.interval, LOGIN_FAILURE_LIMIT: '100000' });
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const summary = (xs: number[]) => `median ${percentile(xs, 50).toFixed(0)} ms, p95 ${percentile(xs, 95).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms`;

/** The page is read first (as the user's browser has it); the clock starts at the Approve POST. */
async function approveOnPage(account: AccountSession): Promise<number> {
  const html = await account.html();
  const [id] = waitingIds(html);
  const clicked = performance.now();
  const res = await postForm(account.jar, `${server.issuer}/account/approvals/${id}/approve`, { csrf: csrfOf(html) });
  if (res.status !== 303) throw new Error(`approve answered ${res.status}`);
  return clicked;
}

try {
  await createScope(server, 'bench:pay', 'Bench payments');
  const user = await createUser(server);
  const account = await signInToAccount(server.issuer, user);
  const polling = await clientFor(server, await createAgent(server, { grantTypes: [CIBA_GRANT], scope: 'openid bench:pay' }));
  const pingAgent = await clientFor(server, await createAgent(server, { grantTypes: [CIBA_GRANT], scope: 'openid bench:pay', cibaPingUri: pingUri }));
  const ask = (config: client.Configuration, extra: Record<string, string> = {}) =>
    client.initiateBackchannelAuthentication(config, { scope: 'openid bench:pay', login_hint: user.username, binding_message: 'BENCH', ...extra });

  const poll: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const asked = await ask(polling);
    const token = client.pollBackchannelAuthenticationGrant(polling, asked).then(() => performance.now());
    // Approve at a random moment within the agent's polling cycle, as a person would.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * Number(values.interval) * 1000));
    const clicked = await approveOnPage(account);
    poll.push((await token) - clicked);
  }

  const ping: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const asked = await ask(pingAgent, { client_notification_token: `bench-${i}-0123456789` });
    const arrived = new Promise<void>((resolve) => pinged.set(asked.auth_req_id, resolve));
    const clicked = await approveOnPage(account);
    await arrived;
    await client.genericGrantRequest(pingAgent, CIBA_GRANT, { auth_req_id: asked.auth_req_id });
    ping.push(performance.now() - clicked);
  }

  process.stdout.write(
    `approval click → agent's token, ${rounds} rounds each\n` +
      `  poll (interval ${values.interval} s): ${summary(poll)}\n` +
      `  ping:                ${summary(ping)}\n`,
  );
} finally {
  await server.stop();
  await receiver.close();
}
