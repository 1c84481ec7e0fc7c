/** An MCP host's side for tests: the official SDK's client with an in-memory OAuth provider. */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';

export const MCP_REDIRECT_URL = 'http://127.0.0.1:33418/callback';

/** What an MCP host keeps per server: its registration, tokens and PKCE verifier, in memory here. */
export class MemoryOAuthProvider implements OAuthClientProvider {
  information: OAuthClientInformationMixed | undefined;
  stored: OAuthTokens | undefined;
  verifier = '';
  authorizationUrl: URL | undefined;
  readonly redirectUrl = MCP_REDIRECT_URL;
  // What MCP hosts send: no application_type, a loopback redirect, no client authentication.
  readonly clientMetadata: OAuthClientMetadata = {
    client_name: 'Test MCP host',
    redirect_uris: [MCP_REDIRECT_URL],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  /** Set to use a Client ID Metadata Document instead of registration, where the server offers it. */
  readonly clientMetadataUrl: string | undefined;
  constructor(clientMetadataUrl?: string) {
    this.clientMetadataUrl = clientMetadataUrl;
  }
  clientInformation() {
    return this.information;
  }
  saveClientInformation(information: OAuthClientInformationMixed) {
    this.information = information;
  }
  tokens() {
    return this.stored;
  }
  saveTokens(tokens: OAuthTokens) {
    this.stored = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

export function mcpTransport(url: string, provider: OAuthClientProvider): StreamableHTTPClientTransport {
  return new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
}

export async function connectMcp(url: string, provider: OAuthClientProvider): Promise<Client> {
  const client = new Client({ name: 'agentauth-test', version: '1.0.0' });
  await client.connect(mcpTransport(url, provider));
  return client;
}

export async function toolText(client: Client, name: string): Promise<string> {
  const result = (await client.callTool({ name, arguments: {} })) as { content: { type: string; text: string }[] };
  return result.content[0]!.text;
}
