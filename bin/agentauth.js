#!/usr/bin/env node
// The `agentauth` command: checks the Node version, then runs the TypeScript CLI.
import { requireSupportedNode } from './node-version.js';

requireSupportedNode();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
