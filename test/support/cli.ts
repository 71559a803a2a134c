import { main } from '../../src/cli/main';

/** Run the real CLI in this process (`vmplace ARGS...`), its output captured, not a TTY. */
export async function runCli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['node', 'vmplace', ...args], {
    out: (s) => (out += s),
    err: (s) => (err += s),
    isTTY: false,
  });
  return { code, out, err };
}
