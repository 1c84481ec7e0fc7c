/** The /account page over plain HTTP with a cookie jar: signing in, reading it, answering a waiting request. */
import { browse, CookieJar, csrfOf, followOnIssuer, postForm } from './browserless.ts';
import type { TestUser } from './factories.ts';

export interface AccountSession {
  jar: CookieJar;
  /** The page as it is now. */
  html(): Promise<string>;
  /** Posts Approve or Deny for the request with this id; the response (303 on success). */
  answer(approvalId: string, decision: 'approve' | 'deny'): Promise<Response>;
}

/** Signs in to /account through the ordinary login page. */
export async function signInToAccount(issuer: string, user: TestUser): Promise<AccountSession> {
  const jar = new CookieJar();
  let html = await (await followOnIssuer(jar, issuer, await browse(jar, `${issuer}/account`))).text();
  const login = /action="(\/interaction\/[^"]+\/login)"/.exec(html)?.[1];
  if (!login) throw new Error(`no login form:\n${html}`);
  html = await (
    await followOnIssuer(jar, issuer, await postForm(jar, `${issuer}${login}`, { csrf: csrfOf(html), username: user.username, password: user.password }))
  ).text();
  if (!html.includes('Your connected agents')) throw new Error(`not signed in:\n${html}`);
  const page = async () => (await browse(jar, `${issuer}/account`)).text();
  return {
    jar,
    html: page,
    async answer(approvalId, decision) {
      const csrf = csrfOf(await page());
      return postForm(jar, `${issuer}/account/approvals/${approvalId}/${decision}`, { csrf });
    },
  };
}

/** The ids of the requests waiting on the page, in order. */
export const waitingIds = (html: string): string[] => [...html.matchAll(/action="\/account\/approvals\/([^/"]+)\/approve"/g)].map((m) => m[1]!);
