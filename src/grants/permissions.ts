/**
 * The one reader of a grant's permissions, used by the consent page (what is asked), the
 * connected agents page (what is held) and their audit rows, so what the user ticks, what the
 * page lists and what a token carries agree.
 *
 * oidc-provider keeps two lists in a Grant: OIDC scopes (`openid.scope`: tokens without a
 * resource) and scopes per resource server (`resources[identifier]`, RFC 8707). Every scope we
 * configure is also an OIDC scope, so a request with `resource=` asks for each scope both ways.
 * To the user that is one permission: a scope asked (or held) for a resource server is that
 * server's permission, and its OIDC twin follows it; only a scope held for no resource server is
 * a permission of its own.
 */

/** A scope, for one resource server or (without `resource`) for tokens without an audience. */
export interface Permission {
  scope: string;
  resource?: string;
}

const words = (value: unknown): string[] => (typeof value === 'string' ? value.split(' ').filter(Boolean) : []);

/** Permissions from the two lists, each scope-and-server once, OIDC twins folded in. */
export function permissionsOf(oidcScopes: readonly string[], resources: Readonly<Record<string, readonly string[]>>): Permission[] {
  const perResource = Object.entries(resources).flatMap(([resource, scopes]) => [...new Set(scopes)].map((scope) => ({ scope, resource })));
  const atSomeServer = new Set(perResource.map((p) => p.scope));
  const plain = [...new Set(oidcScopes)].filter((scope) => !atSomeServer.has(scope)).map((scope) => ({ scope }));
  return [...plain, ...perResource];
}

/** What a stored grant (oidc-provider's Grant payload) holds. */
export function grantPermissions(payload: unknown): Permission[] {
  const grant = (payload ?? {}) as { openid?: { scope?: unknown }; resources?: Record<string, unknown> };
  const resources = Object.fromEntries(Object.entries(grant.resources ?? {}).map(([resource, scope]) => [resource, words(scope)]));
  return permissionsOf(words(grant.openid?.scope), resources);
}

/** The checkbox value and audit label of a permission: the scope, then the server if any. */
export const permissionLabel = (p: Permission): string => (p.resource ? `${p.scope} ${p.resource}` : p.scope);

/** What the user reads: the scope's description, and at which server. */
export function describePermission(p: Permission, describeScope: (scope: string) => string): string {
  if (!p.resource) return describeScope(p.scope);
  const host = URL.parse(p.resource)?.host ?? p.resource;
  return `${describeScope(p.scope)} (at ${host})`;
}

/**
 * Whether the OIDC scope is granted, given the permissions the user allowed: its own checkbox,
 * or (folded) any resource server's permission for the same scope.
 */
export const oidcScopeAllowed = (scope: string, allowed: readonly Permission[]): boolean => allowed.some((p) => p.scope === scope);
