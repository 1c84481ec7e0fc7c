/** The payment authorization details type the human-approval suites register (RFC 9396). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Target } from './factories.ts';

export const PAYMENTS_API = 'https://payments.example.com/';

export const PAYMENT_SCHEMA = {
  type: 'object',
  properties: {
    amount: { type: 'string', pattern: '^[0-9]{1,9}(\\.[0-9]{2})?$' },
    currency: { type: 'string', enum: ['EUR', 'USD'] },
    creditor: { type: 'string', minLength: 1, maxLength: 100 },
  },
  required: ['amount', 'currency', 'creditor'],
  additionalProperties: false,
};

export const payment = (overrides: Record<string, unknown> = {}) => ({
  type: 'payment_initiation',
  amount: '420.00',
  currency: 'USD',
  creditor: 'ACME Corp',
  ...overrides,
});

/** Writes a schema to a temporary file for --schema-file. */
export function schemaFile(schema: unknown): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'agentauth-schema-')), 'schema.json');
  writeFileSync(file, JSON.stringify(schema));
  return file;
}

/** An opaque-token resource server for payments (so introspection shows the detail) and the one-time payment_initiation type for it. */
export async function registerPaymentType(server: Target): Promise<void> {
  const rs = await server.cli(['resources', 'create', PAYMENTS_API, '--scopes', 'payments:initiate']);
  if (rs.code !== 0) throw new Error(`resources create: ${rs.stderr}`);
  const r = await server.cli([
    'details-types',
    'create',
    'payment_initiation',
    '--schema-file',
    schemaFile(PAYMENT_SCHEMA),
    '--template',
    'Pay {amount} {currency} to {creditor}',
    '--resource',
    PAYMENTS_API,
    '--one-time',
    '--json',
  ]);
  if (r.code !== 0) throw new Error(`details-types create: ${r.stderr}`);
}
