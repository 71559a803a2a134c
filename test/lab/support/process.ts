import type { ChildProcess } from 'node:child_process';

/**
 * The exit code of a child once its output has been read: Node may fire 'exit' before the last
 * stdout/stderr data (seen on a busy machine), so wait for 'close'; if a grandchild keeps the
 * pipes open, give up waiting 2 s after the exit.
 */
export function exitedDrained(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    let code: number | null = null;
    child.on('exit', (c) => {
      code = c;
      setTimeout(() => resolve(code), 2000).unref();
    });
    child.on('close', (c) => resolve(c ?? code));
  });
}
