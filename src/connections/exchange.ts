/**
 * Token exchange for a connection (RFC 8693 with `resource` naming it): the agent presents its
 * own access token for the user as the subject token and receives the upstream access token from
 * the vault, with its remaining lifetime. Never the upstream refresh token.
 */
import { AgentauthError } from '../errors.ts';
import { upstreamAccessToken, type VaultDeps } from './vault.ts';

/** A connection as a token exchange names it: `resource=urn:agentauth:connection:<id>`. */
export const CONNECTION_RESOURCE_PREFIX = 'urn:agentauth:connection:';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export const connectionOfTarget = (target: string | undefined): string | undefined =>
  target?.startsWith(CONNECTION_RESOURCE_PREFIX) ? target.slice(CONNECTION_RESOURCE_PREFIX.length) : undefined;

export interface ConnectionExchange {
  connectionId: string;
  /** The authenticated client. */
  actor: string;
  /** The active subject token's grant (checked by the exchange grant). */
  subject: { clientId: string; accountId: string; grantId: string; chain: string[] };
}

/** The RFC 8693 §2.2.1 answer carrying the upstream access token. */
export async function exchangeForConnection(vault: VaultDeps, request: ConnectionExchange): Promise<Record<string, unknown>> {
  // The subject token must be the agent's own: a token of another client's grant does not let
  // this client reach the user's other services (a delegate first obtains its own by exchange).
  if (request.subject.clientId !== request.actor) {
    throw new AgentauthError(400, 'invalid_request', "the subject token must be the requesting agent's own access token");
  }
  const access = await upstreamAccessToken(vault, {
    accountId: request.subject.accountId,
    connectionId: request.connectionId,
    clientId: request.actor,
    grantId: request.subject.grantId,
    chain: request.subject.chain,
  });
  return {
    access_token: access.accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: access.tokenType,
    ...(access.expiresIn === undefined ? {} : { expires_in: access.expiresIn }),
    scope: access.scopes.join(' '),
  };
}
