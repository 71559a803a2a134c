/**
 * `vmplace daemon` on SIGTERM: a failed stop ends the command with EXIT.failed and a logged
 * error, not an unhandled rejection that leaves the command waiting forever (issue 10 item 8:
 * every detached promise handled). The Daemon is a stand-in: this is about the CLI's wiring.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';

const logLines: string[] = [];
jest.mock('../../../src/log', () => ({
  createLogger: () =>
    pino(
      new Writable({
        write(chunk: Buffer, _enc, done) {
          logLines.push(chunk.toString());
          done();
        },
      }),
    ),
}));
const started = jest.fn<Promise<void>, []>();
const stopped = jest.fn<Promise<void>, []>();
jest.mock('../../../src/daemon/daemon', () => ({
  Daemon: jest.fn().mockImplementation(() => ({ start: started, stop: stopped })),
}));

import { EXIT, main } from '../../../src/cli/main';

it('exits with EXIT.failed when stopping the daemon fails', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vmplace-stop-'));
  const io = { out: () => undefined, err: () => undefined, isTTY: false };
  let ready!: () => void;
  const isStarted = new Promise<void>((r) => (ready = r));
  started.mockImplementation(async () => ready());
  stopped.mockRejectedValue(new Error('the status commit hung'));
  const sigintBefore = process.listeners('SIGINT');
  const sigtermBefore = process.listeners('SIGTERM');
  try {
    const code = main(
      ['node', 'vmplace', 'daemon', '--repo', root, '--workdir', root, '--state-dir', root],
      io,
    );
    await isStarted;
    // the command's SIGTERM listener only (other listeners of this process are not ours to call)
    const onTerm = process.listeners('SIGTERM').filter((l) => !sigtermBefore.includes(l));
    expect(onTerm).toHaveLength(1);
    process.off('SIGTERM', onTerm[0]!);
    onTerm[0]!('SIGTERM');
    await expect(code).resolves.toBe(EXIT.failed);
    expect(stopped).toHaveBeenCalledTimes(1);
    expect(logLines.join('')).toContain('"msg":"stop failed"');
  } finally {
    // the command's own SIGINT listener is still registered (SIGTERM came first)
    for (const l of process.listeners('SIGINT')) if (!sigintBefore.includes(l)) process.off('SIGINT', l);
    fs.rmSync(root, { recursive: true, force: true });
  }
});
