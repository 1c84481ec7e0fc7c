// Checks the running Node before anything imports TypeScript: Node 20, still what many
// distributions ship, would otherwise die with ERR_UNKNOWN_FILE_EXTENSION ".ts". Plain
// JavaScript on purpose, so it runs on any Node.
const [major, minor] = process.versions.node.split('.').map(Number);
const NEEDED = [22, 18];

export function requireSupportedNode() {
  if (major > NEEDED[0] || (major === NEEDED[0] && minor >= NEEDED[1])) return;
  process.stderr.write(
    `agentauth needs Node.js ${NEEDED.join('.')} or newer (it runs TypeScript natively); this is Node.js ${process.versions.node}. Install Node 22 LTS (for example \`nvm install 22\`, or \`npm i --prefix ~/.node22 node@22\` and put ~/.node22/node_modules/node/bin first on PATH).\n`,
  );
  process.exit(1);
}
