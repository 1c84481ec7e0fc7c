/**
 * The OpenAPI 3.1 document of the admin API, built from the route table and the operations'
 * own input schemas (zod → JSON Schema), so what is documented is what is validated.
 */
import { z } from 'zod';
import { operations } from '../operations/operations.ts';
import type { AdminRoute } from './routes.ts';

const ERROR = { $ref: '#/components/schemas/Error' };
const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: ERROR } } });

function pathParameters(path: string) {
  return [...path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1]!, in: 'path', required: true, schema: { type: 'string' } }));
}

/** The operation's input schema without the fields the path supplies. */
function bodySchema(route: AdminRoute): Record<string, unknown> {
  const schema = z.toJSONSchema(operations[route.operation].input, { io: 'input', unrepresentable: 'any' }) as {
    properties?: Record<string, unknown>;
    required?: string[];
  };
  const fromPath = new Set(pathParameters(route.path).map((p) => p.name));
  const { $schema: _drop, ...rest } = schema as Record<string, unknown>;
  return {
    ...rest,
    properties: Object.fromEntries(Object.entries(schema.properties ?? {}).filter(([k]) => !fromPath.has(k))),
    ...(schema.required ? { required: schema.required.filter((k) => !fromPath.has(k)) } : {}),
  };
}

function operationObject(route: AdminRoute) {
  return {
    operationId: route.operation,
    summary: route.summary,
    parameters: [...pathParameters(route.path), ...(route.query ?? []).map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } }))],
    ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: bodySchema(route) } } } } : {}),
    responses: {
      [String(route.status ?? 200)]: { description: 'Done', content: { 'application/json': { schema: { type: 'object' } } } },
      400: errorResponse('invalid_request: the input is not acceptable (error_description says why)'),
      401: errorResponse('invalid_token: no valid admin token'),
      ...(route.path.includes('{') ? { 404: errorResponse('not_found: nothing by that name') } : {}),
    },
  };
}

export function openApiDocument(routes: readonly AdminRoute[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    paths[route.path] ??= {};
    paths[route.path]![route.method.toLowerCase()] = operationObject(route);
  }
  paths['/admin/audit'] = {
    get: {
      operationId: 'audit.stream',
      summary: 'Audit events as JSON lines, oldest first, a page after the cursor `after` (an event id); a full page links the next with Link: rel="next"',
      parameters: ['since', 'user', 'client', 'after', 'limit'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } })),
      responses: {
        200: { description: 'One audit event per line', content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
        400: errorResponse('invalid_request'),
        401: errorResponse('invalid_token'),
      },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'agentauth admin API',
      version: '1',
      description: 'Everything the agentauth CLI does, over HTTP. Input fields are those of the CLI operations.',
    },
    servers: [{ url: '/' }],
    security: [{ adminToken: [] }],
    paths,
    components: {
      securitySchemes: { adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN, or one of ADMIN_TOKENS (its name is the audit actor)' } },
      schemas: { Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' }, error_description: { type: 'string' } } } },
    },
  };
}
