/**
 * The polling interval of the asynchronous grants (CIBA Core §7.3 and RFC 8628 §3.5): an agent
 * that polls its auth_req_id or device_code again sooner than the interval is answered slow_down
 * (and, by both specs, adds 5 seconds to its interval). The built-in grant handlers are wrapped,
 * so client authentication and everything after stay oidc-provider's.
 *
 * The last poll's time is kept in the key-value store (Redis across instances). Losing it only
 * forgets a poll time: nothing here guards a credential (redemption is atomic in PostgreSQL).
 */
import { createHash } from 'node:crypto';
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import type { Kv } from '../storage/kv.ts';
import { CIBA_GRANT, DEVICE_CODE_GRANT } from '../clients/policy.ts';

/** Network jitter: a poll this much early still counts as on time. */
const TOLERANCE_MS = 250;

const POLLED_PARAMETER: Record<string, string> = { [CIBA_GRANT]: 'auth_req_id', [DEVICE_CODE_GRANT]: 'device_code' };

export function installPollInterval(provider: Provider, kv: Kv, intervalSeconds: number): void {
  // RFC 8628 §3.2: the device authorization response says the interval (CIBA's is set by its hook).
  provider.use(async function announceInterval(ctx, next) {
    await next();
    const body = ctx.body as Record<string, unknown> | undefined;
    if ((ctx as unknown as KoaContextWithOIDC).oidc?.route === 'device_authorization' && body && typeof body.device_code === 'string') {
      body.interval = intervalSeconds;
    }
  });
  const handlers = instance(provider).grantTypeHandlers;
  for (const [grantType, parameter] of Object.entries(POLLED_PARAMETER)) {
    const handler = handlers.get(grantType);
    if (!handler) continue;
    handlers.set(grantType, async (ctx: unknown) => {
      const value = (ctx as KoaContextWithOIDC).oidc.params?.[parameter];
      if (typeof value === 'string' && value) await checkInterval(kv, `poll:${createHash('sha256').update(value).digest('base64url')}`, intervalSeconds);
      return handler(ctx);
    });
  }
}

async function checkInterval(kv: Kv, key: string, intervalSeconds: number): Promise<void> {
  const now = Date.now();
  let last: number | undefined;
  try {
    const stored = await kv.get(key);
    last = stored ? Number(stored) : undefined;
  } catch {
    return; // the store is down: polls go through, at the cost of their interval
  }
  if (last !== undefined && now - last < intervalSeconds * 1000 - TOLERANCE_MS) throw new errors.SlowDown();
  await kv.set(key, String(now), intervalSeconds * 2 + 60).catch(() => {});
}
