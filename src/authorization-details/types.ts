/**
 * Authorization details types (RFC 9396) registered by the product team: each names the JSON
 * Schema its fields must satisfy (compiled by zod's `fromJSONSchema`), the sentence the user
 * reads, the resource server it is for, and whether it is one-time (a payment).
 */
import { z } from 'zod';
import { InvalidRequest } from '../errors.ts';
import type { Db } from '../storage/db.ts';
import { bumpConfigGeneration } from '../storage/generation.ts';

export interface DetailsType {
  name: string;
  /** JSON Schema for the detail's fields (every member but `type`). */
  schema: Record<string, unknown>;
  /** "Pay {amount} {currency} to {creditor}": each {name} is a field of the detail. */
  template: string;
  /** The resource server the detail is for: a request naming no `resource` gets a token for it. */
  resource: string | null;
  /** One approval, one transaction: the token is short-lived and comes with no refresh token. */
  oneTime: boolean;
}

/** One authorization detail as a request carries it (RFC 9396 §2). */
export type AuthorizationDetail = { type: string } & Record<string, unknown>;

export const DETAILS_TYPE_NAME = /^[A-Za-z0-9][A-Za-z0-9:._/-]{0,99}$/;
const PLACEHOLDER = /\{([A-Za-z0-9_]{1,64})\}/g;

const COLUMNS = 'name, schema, template, resource, one_time AS "oneTime"';

/** Compiles a registered schema; throws InvalidRequest (one operator line) when zod cannot read it. */
export function compileSchema(schema: Record<string, unknown>): z.ZodType {
  try {
    return z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
  } catch (err) {
    throw new InvalidRequest(`the JSON Schema cannot be used: ${(err as Error).message}`);
  }
}

/**
 * Checks a type before it is stored: the schema compiles, describes an object, and every
 * placeholder of the sentence is one of its required properties (so a sentence never shows a
 * hole where an amount should be).
 */
export function checkDetailsType(type: DetailsType): void {
  compileSchema(type.schema);
  if (type.schema.type !== 'object') throw new InvalidRequest('the JSON Schema must describe an object ("type": "object")');
  const required = new Set(Array.isArray(type.schema.required) ? (type.schema.required as unknown[]).map(String) : []);
  for (const [, field] of type.template.matchAll(PLACEHOLDER)) {
    if (!required.has(field!)) throw new InvalidRequest(`the sentence names {${field}}, which the schema does not require`);
  }
}

/** The sentence the user reads for one detail: its type's template with the detail's values. */
export function sentenceFor(detail: AuthorizationDetail, type: DetailsType | undefined): string {
  if (!type) return `${detail.type}: ${JSON.stringify(detail)}`;
  return type.template.replace(PLACEHOLDER, (_whole, field: string) => {
    const value = detail[field];
    return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value ?? null);
  });
}

/** Which of these details are of a one-time type. */
export const hasOneTimeDetail = (details: unknown, types: ReadonlyMap<string, DetailsType>): boolean =>
  Array.isArray(details) && details.some((d) => types.get(String((d as { type?: unknown })?.type))?.oneTime === true);

export async function upsertDetailsType(db: Db, type: DetailsType): Promise<DetailsType> {
  checkDetailsType(type);
  return db.tx(async () => {
    await db.query(
      `INSERT INTO authorization_details_types (name, schema, template, resource, one_time) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (name) DO UPDATE SET schema = EXCLUDED.schema, template = EXCLUDED.template, resource = EXCLUDED.resource, one_time = EXCLUDED.one_time`,
      [type.name, type.schema, type.template, type.resource, type.oneTime],
    );
    await bumpConfigGeneration(db);
    return type;
  });
}

export async function listDetailsTypes(db: Db): Promise<DetailsType[]> {
  return (await db.query<DetailsType>(`SELECT ${COLUMNS} FROM authorization_details_types ORDER BY name`)).rows;
}

/** The details of a request as the user reads them, one sentence each. */
export function sentencesFor(details: unknown, types: ReadonlyMap<string, DetailsType>): string[] {
  if (!Array.isArray(details)) return [];
  return details.map((d) => sentenceFor(d as AuthorizationDetail, types.get(String((d as { type?: unknown }).type))));
}

/** Parses the authorization_details parameter oidc-provider already checked; undefined when absent. */
export function parsedDetails(raw: unknown): AuthorizationDetail[] | undefined {
  if (typeof raw !== 'string' || raw === '') return undefined;
  const value = JSON.parse(raw) as unknown;
  return Array.isArray(value) && value.length > 0 ? (value as AuthorizationDetail[]) : undefined;
}
