/**
 * The user's side of the device flow (RFC 8628 §3.3): the page where the code from the terminal
 * is typed, the confirmation that names the agent, and the page after consent. oidc-provider
 * runs the flow (its xsrf token, then our login and consent pages); these render our views, with
 * no inline script (the CSP allows none).
 */
import type { Client, KoaContextWithOIDC } from 'oidc-provider';
import type { Views } from '../http/views.ts';

/** oidc-provider's form carries its xsrf token; the pages render their own form around it. */
const xsrfOf = (form: string) => /name="xsrf" value="([^"]*)"/.exec(form)?.[1] ?? '';
const actionOf = (form: string) => /action="([^"]*)"/.exec(form)?.[1] ?? '/device';

function errorWords(err: unknown): string | undefined {
  if (!err) return undefined;
  const name = (err as { name?: string }).name;
  if (name === 'NotFoundError' || name === 'NoCodeError') return 'That code is not right. Check it and try again.';
  if (name === 'ExpiredError') return 'That code has expired. Start again in your terminal.';
  if (name === 'AlreadyUsedError') return 'That code was used already. Start again in your terminal.';
  if (name === 'AbortedError') return 'Cancelled. Nothing was connected.';
  return 'The code could not be checked. Try again.';
}

export function devicePages(views: Views) {
  return {
    async userCodeInputSource(ctx: KoaContextWithOIDC, form: string, _out?: unknown, err?: unknown): Promise<void> {
      ctx.type = 'html';
      ctx.body = views.render('device', { action: actionOf(form), xsrf: xsrfOf(form), error: errorWords(err) });
    },
    async userCodeConfirmSource(
      ctx: KoaContextWithOIDC,
      form: string,
      client: Client,
      deviceInfo: { ip?: string } | undefined,
      userCode: string,
    ): Promise<void> {
      ctx.type = 'html';
      ctx.body = views.render('device-confirm', {
        action: actionOf(form),
        xsrf: xsrfOf(form),
        userCode,
        clientName: client.clientName ?? client.clientId,
        deviceIp: deviceInfo?.ip ?? 'an unknown address',
      });
    },
    async successSource(ctx: KoaContextWithOIDC): Promise<void> {
      ctx.type = 'html';
      ctx.body = views.render('device-done', { clientName: ctx.oidc.client?.clientName ?? ctx.oidc.client?.clientId });
    },
  };
}
