/**
 * The Node flags agentauth runs with. On Node 22 AsyncLocalStorage is built on async hooks: every
 * promise a request creates runs an init hook and copies each store, and a token request creates
 * hundreds (oidc-provider's context, our request context and unit of work all live there).
 * `--experimental-async-context-frame` keeps the stores in V8's continuation data instead; it is
 * Node 24's default, and Node 24 refuses the flag as an unknown option, so it is given before
 * Node 24 only. Measured: 10–14 % less CPU per token request (docs/performance.md, "AsyncContextFrame").
 * The Dockerfile starts the server with these flags, and so do the tests and the benchmark.
 */
export const ASYNC_CONTEXT_FRAME = '--experimental-async-context-frame';

const major = Number(process.versions.node.split('.')[0]);

/** The flags to start the server with on the Node that runs this. */
export const serverNodeFlags = (): string[] => (major < 24 ? [ASYNC_CONTEXT_FRAME] : []);

/** Whether this process keeps AsyncLocalStorage on AsyncContextFrame. */
export function onAsyncContextFrame(): boolean {
  if (major >= 24) return true;
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return given.includes(ASYNC_CONTEXT_FRAME);
}
