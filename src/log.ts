import pino, { type Logger } from 'pino';

/** Paths of log fields that may carry secrets; their values never reach a log line. */
export const REDACT_PATHS = [
  'password',
  'secret',
  'token',
  '*.password',
  '*.secret',
  '*.token',
  'webhookSecret',
  '*.webhookSecret',
  'headers.authorization',
  'headers["x-hub-signature-256"]',
];

/**
 * The process logger: JSON lines on stderr (stable field names: `vm`, `migration`, `step`,
 * `host`, `err`), or a human rendering with `pretty`. stdout stays free for command output.
 */
export function createLogger(opts: { format?: 'json' | 'pretty'; level?: string } = {}): Logger {
  const level = opts.level ?? process.env.VMPLACE_LOG_LEVEL ?? 'info';
  const base = { level, redact: { paths: REDACT_PATHS, censor: '[REDACTED]' }, base: { pid: process.pid } };
  if (opts.format === 'pretty') {
    // pino-pretty as a synchronous stream: no worker thread, nothing lost on exit
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
    return pino(
      base,
      pretty({
        destination: 2,
        colorize: process.stderr.isTTY,
        ignore: 'pid,hostname',
        sync: true,
        singleLine: true,
      }),
    );
  }
  return pino(base, pino.destination({ dest: 2, sync: true }));
}
