#!/usr/bin/env node
// `npm start`: checks the Node version, then starts the server (src/main.ts).
import { requireSupportedNode } from './node-version.js';

requireSupportedNode();
await import('../src/main.ts');
