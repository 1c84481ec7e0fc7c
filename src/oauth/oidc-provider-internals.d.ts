// oidc-provider keeps its grant handlers in a private store reachable only through this reader.
// Used in one place (src/oauth/refresh-rotation.ts) to wrap the built-in refresh_token handler.
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  export default function instance(provider: object): { grantTypeHandlers: Map<string, (ctx: unknown) => Promise<void>> };
}
