// The lab tests run the real `vmplace` binary (bin/vmplace.js -> dist/): build it first.
const { execFileSync } = require('node:child_process');
const path = require('node:path');

module.exports = async function globalSetup() {
  const root = path.resolve(__dirname, '..', '..');
  // a fresh dist/: a file left from a module that moved (steps.ts -> steps/index.ts) would
  // shadow the new one
  require('node:fs').rmSync(path.join(root, 'dist'), { recursive: true, force: true });
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: root,
    stdio: 'inherit',
  });
};
