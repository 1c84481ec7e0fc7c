// oidc-provider keeps its grant handlers and router in a private store reachable only through
// this reader. Used to wrap the built-in refresh_token handler (src/oauth/refresh-rotation.ts)
// and to name a request's endpoint the way the router matches it (src/http/provider-route.ts).
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  export default function instance(provider: object): {
    grantTypeHandlers: Map<string, (ctx: unknown) => Promise<void>>;
    router: { match(method: string, path: string): { route: { name: string } } | undefined };
  };
}
