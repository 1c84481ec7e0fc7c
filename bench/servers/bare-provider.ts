/**
 * The in-memory ceiling: oidc-provider with agentauth's protocol configuration (see
 * reference-provider.ts) and the library's MemoryAdapter. No database, no Redis, no audit, no
 * rate limits: nobody deploys it, it says what the library itself costs.
 *
 * Storage is the MemoryAdapter over its LRU store, sized for the benchmark's data: the default
 * store keeps 1,000 entries, fewer than one scenario prepares, and evicts grants.
 *
 *   BENCH_REFERENCE_CONFIG=<file.json> node bench/servers/bare-provider.ts
 */
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import { readReferenceConfig, serveReferenceProvider } from './reference-provider.ts';

const store = new LRU({ maxSize: 10_000_000 });
const server = await serveReferenceProvider(
  'bare oidc-provider',
  readReferenceConfig(),
  class extends MemoryAdapter {
    constructor(model: string) {
      super(model, store);
    }
  },
  true,
);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
