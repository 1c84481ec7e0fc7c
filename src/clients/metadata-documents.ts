/**
 * Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, what MCP clients
 * prefer to registration): a client whose client_id is the https URL of its metadata. oidc-provider
 * fetches the document through our outbound module (64 KiB, no redirects, the address policy on
 * the dialled socket) and caches it; here we decide
 * - whether it may be fetched at all: anyone can make the server fetch a URL by naming it as a
 *   client_id, so each IP address has a budget, and private hosts are refused up front;
 * - whether the client it describes is acceptable: the same policy as open registration (public
 *   clients with PKCE only, exact redirect URIs, names and URLs checked), and not disabled.
 * Each accepted client also gets a row in `clients` (registration `metadata_document`) so grants,
 * the consent and account pages ("unverified"), rate limits and `clients disable` work as for any
 * other client, while the document stays the source of its metadata.
 */
import { errors } from 'oidc-provider';
import { canonicalJson } from '../audit/chain.ts';
import type { AuditLog } from '../audit/log.ts';
import type { RateLimiter, Window } from '../limits/rate-limit.ts';
import { metrics } from '../metrics/metrics.ts';
import type { Db } from '../storage/db.ts';
import { checkClientMetadata, type ClientPolicy } from './policy.ts';
import { storeNewClient } from './registration.ts';
import { findClient, updateClientMetadata, type ClientMetadata } from './store.ts';
import { scopeForUnverified, scopesOpenToUnverified } from '../scopes/store.ts';

export interface MetadataDocumentDeps {
  db: Db;
  audit: AuditLog;
  policy: ClientPolicy;
  limiter: RateLimiter;
  /** Document fetches each IP address may cause (cache misses only). */
  fetchesPerIp: Window;
  /** The per-client token limit's hook, as for clients found in the database. */
  clientFound(clientId: string, tokenRateLimit: number | null): Promise<void>;
}

export interface MetadataDocumentHooks {
  allowFetch(ip: string, url: string): Promise<boolean>;
  /**
   * Throws the OAuth error to show when the described client is refused; otherwise returns the
   * scope it is held to (those open to unverified clients).
   */
  admitClient(metadata: ClientMetadata): Promise<string>;
}

export function metadataDocumentHooks(deps: MetadataDocumentDeps): MetadataDocumentHooks {
  const { db, policy } = deps;
  return {
    async allowFetch(ip, url) {
      // Refused URLs never reach the fetch, so they spend no budget.
      if (policy.outbound.urlRefusal(new URL(url))) return false;
      const { allowed } = await deps.limiter.hit('metadata-document', ip, deps.fetchesPerIp);
      if (!allowed) metrics.rateLimitRefused('metadata_document');
      return allowed;
    },

    async admitClient(metadata) {
      const clientId = metadata.client_id;
      let existing = await findClient(db, clientId);
      if (!existing) {
        await checkClientMetadata(db, metadata, 'metadata_document', policy);
        // Two first uses at once (two instances, or two requests): one inserts, the other finds
        // the row and goes on as for a known document.
        if (await storeNewClient(db, deps.audit, metadata, 'metadata_document', { type: 'client', id: clientId })) {
          await deps.clientFound(clientId, null);
          return scopeForUnverified(metadata.scope, await scopesOpenToUnverified(db));
        }
        existing = await findClient(db, clientId);
        if (!existing) throw new errors.InvalidClient('client is not allowed'); // deleted in between
      }
      if (existing.registration !== 'metadata_document') throw new errors.InvalidClient('client is not allowed');
      if (existing.disabledAt) throw new errors.InvalidClient('this client has been disabled');
      // Called on every request of the client: the policy (which reads the scopes) runs only
      // when the document changed, as for any other client's update.
      const changed = changedFields(existing.metadata, metadata);
      if (changed.length) {
        await checkClientMetadata(db, metadata, 'metadata_document', policy);
        await updateClientMetadata(db, metadata);
        await deps.audit.record({
          type: 'client.updated',
          actor: { type: 'client', id: clientId },
          clientId,
          details: { changed, via: 'metadata_document', client_name: metadata.client_name },
        });
      }
      await deps.clientFound(clientId, existing.tokenRateLimit);
      return scopeForUnverified(metadata.scope, await scopesOpenToUnverified(db));
    },
  };
}

/** Top-level fields whose value differs (key order inside values does not count). */
function changedFields(stored: ClientMetadata, fetched: ClientMetadata): string[] {
  return [...new Set([...Object.keys(stored), ...Object.keys(fetched)])].filter((k) => canonicalJson(stored[k]) !== canonicalJson(fetched[k])).sort();
}
