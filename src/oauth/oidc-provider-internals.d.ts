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

// The keyed nonce generator oidc-provider uses for DPoP-Nonce (an HKDF of a secret and the time
// step), built here for every secret so a rotated one keeps its nonces good (src/oauth/dpop.ts).
declare module 'oidc-provider/lib/helpers/challenge.js' {
  export default class ServerChallenge {
    constructor(secret: Buffer, info: string);
    nextChallenge(): string;
    checkChallenge(challenge: string): boolean;
  }
}

// The DPoP proof verification of the token endpoint's grants, and their jti replay check; the
// refresh retry rule runs them itself when it answers without the built-in handler.
declare module 'oidc-provider/lib/helpers/validate_dpop.js' {
  export interface DpopResult {
    thumbprint: string;
    jti: string;
    iat: number;
  }
  export default function validateDpop(provider: object, ctx: unknown, accessToken?: string): Promise<DpopResult | undefined>;
  export function checkDpopReplay(provider: object, ctx: unknown, dPoP: DpopResult | undefined, clientId: string, ErrorClass?: unknown): Promise<void>;
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
