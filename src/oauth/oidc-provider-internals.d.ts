// oidc-provider keeps its grant handlers in a private store reachable only through this reader.
// Used in one place (src/oauth/refresh-rotation.ts) to wrap the built-in refresh_token handler
// and to check a refresh's resource the way that handler will, before anything is consumed.
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  export interface ResourceIndicatorsFeature {
    enabled: boolean;
    getResourceServerInfo(ctx: unknown, resource: string, client: unknown): Promise<unknown>;
  }
  export default function instance(provider: object): {
    grantTypeHandlers: Map<string, (ctx: unknown) => Promise<void>>;
    configuration: { features: { resourceIndicators: ResourceIndicatorsFeature; userinfo: { enabled: boolean } } };
  };
}

// The resolution of a token request's resource indicator (RFC 8707 §2.2) the built-in grants use.
declare module 'oidc-provider/lib/helpers/resolve_resource.js' {
  export default function resolveResource(ctx: unknown, model: unknown, config: unknown, scopes?: Set<string>): Promise<string | undefined>;
}
