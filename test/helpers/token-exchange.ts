/** Token exchange (RFC 8693) as a test client sends it: the answer whatever it is, error or not. */
import * as client from 'openid-client';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface Exchanged {
  status: number;
  body: Record<string, unknown>;
}

/** One token exchange request as `config`'s client. */
export async function tokenExchange(config: client.Configuration, params: Record<string, string>, options?: client.DPoPOptions): Promise<Exchanged> {
  try {
    const body = await client.genericGrantRequest(config, TOKEN_EXCHANGE, params, options);
    return { status: 200, body: body as unknown as Record<string, unknown> };
  } catch (err) {
    if (err instanceof client.ResponseBodyError) return { status: err.status, body: err.cause as Record<string, unknown> };
    throw err;
  }
}
