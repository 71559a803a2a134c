/** A pino logger that keeps its lines in memory, for tests that assert on what was logged. */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** A pino logger writing JSON lines into `lines` (debug level). */
export function memoryLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}
