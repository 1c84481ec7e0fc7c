// oidc-provider keeps its grant handlers, configuration and router in a private store reachable
// only through this reader. Used to wrap the built-in refresh_token handler and check a refresh's
// resource the way that handler will, before anything is consumed (src/oauth/refresh-rotation.ts),
// and to name a request's endpoint the way the router matches it (src/http/provider-route.ts).
// The token exchange grant (src/oauth/token-exchange.ts) verifies JWT subject tokens with the
// provider's own keys and finds the subject's account the way the built-in grants do.
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  export interface ResourceIndicatorsFeature {
    enabled: boolean;
    getResourceServerInfo(ctx: unknown, resource: string, client: unknown): Promise<unknown>;
  }
  export default function instance(provider: object): {
    grantTypeHandlers: Map<string, (ctx: unknown) => Promise<void>>;
    configuration: {
      features: { resourceIndicators: ResourceIndicatorsFeature; userinfo: { enabled: boolean } };
      findAccount(ctx: unknown, sub: string, token?: unknown): Promise<{ accountId: string } | undefined>;
    };
    keystore: Iterable<Record<string, unknown>> & { getKeyObject(jwk: Record<string, unknown>, getPublic: true): Record<string, unknown> };
    router: { match(method: string, path: string): { route: { name: string } } | undefined };
  };
}

// The resolution of a token request's resource indicator (RFC 8707 §2.2) the built-in grants use.
declare module 'oidc-provider/lib/helpers/resolve_resource.js' {
  export default function resolveResource(ctx: unknown, model: unknown, config: unknown, scopes?: Set<string>): Promise<string | undefined>;
}

// What a token's `resourceServer` must be (its audience, scopes, format, lifetime, JWT signing).
declare module 'oidc-provider/lib/helpers/resource_server.js' {
  export default class ResourceServer {
    constructor(identifier: string, data: unknown);
    readonly audience: string | undefined;
    readonly scope: string;
    readonly accessTokenTTL: number | undefined;
    identifier(): string;
  }
}
