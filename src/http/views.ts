/** Server-rendered pages. Eta escapes every `<%= %>` value; view data is built in TypeScript. */
import { fileURLToPath } from 'node:url';
import { Eta } from 'eta';

const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url));

export interface Views {
  render(
    name: 'login' | 'consent' | 'error' | 'account' | 'confirm' | 'signed-out' | 'device' | 'device-confirm' | 'device-done',
    data: Record<string, unknown>,
  ): string;
}

export function createViews(): Views {
  const eta = new Eta({ views: VIEWS_DIR, autoEscape: true, cache: true });
  return { render: (name, data) => eta.render(name, data) };
}

export const STATIC_DIR = fileURLToPath(new URL('../../views/static/', import.meta.url));
