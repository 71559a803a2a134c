/**
 * Parsing rsync's machine-readable-enough output: `--info=progress2` lines for progress and
 * `--stats` for what crossed the wire. Pure functions, tested on recorded output of rsync 3.5.0
 * (Debian 12).
 *
 * `--info=progress2` rewrites one line with `\r` (no `\n` until the end):
 *
 *     `\r     21,561,344  32%   19.19MB/s    0:00:02  \r     67,108,864 100%   19.50MB/s    0:00:03 (xfr#1, to-chk=0/1)`
 *
 * The byte count is the position reached in the file, *including* data matched on the receiver
 * (a resumed copy jumps ahead quickly); it is not the number of bytes sent. `--stats` gives
 * that: `Literal data:` (file data sent) and `Total bytes sent:` (everything, protocol included).
 */

export interface RsyncProgress {
  /** bytes of the file(s) processed so far */
  bytes: number;
  percent: number;
  /** as rsync prints it, e.g. `19.19MB/s` */
  rate: string;
  /** estimated time remaining (or, on the final line, elapsed), in seconds */
  seconds: number;
}

const PROGRESS_LINE = /^\s*([\d,.']+)\s+(\d{1,3})%\s+(\S+\/s)\s+(\d+):(\d\d):(\d\d)/;

/** One progress2 line (a `\r`- or `\n`-terminated piece), or undefined when it is something else. */
export function parseProgressLine(line: string): RsyncProgress | undefined {
  const m = PROGRESS_LINE.exec(line);
  if (!m) return undefined;
  const bytes = Number(m[1]!.replace(/[,.']/g, ''));
  if (!Number.isSafeInteger(bytes)) return undefined;
  return {
    bytes,
    percent: Number(m[2]),
    rate: m[3]!,
    seconds: Number(m[4]) * 3600 + Number(m[5]) * 60 + Number(m[6]),
  };
}

/**
 * Incremental parser for a stream of rsync stdout chunks: call `push(chunk)` with each chunk as
 * it arrives; it calls `onProgress` for each complete progress line (a chunk may end mid-line)
 * and keeps the rest of the text for `parseRsyncStats`.
 */
export class RsyncProgressParser {
  private pending = '';
  private readonly text: string[] = [];
  private textLen = 0;
  /** the last progress seen */
  last: RsyncProgress | undefined;

  constructor(private readonly onProgress: (p: RsyncProgress) => void = () => undefined) {}

  push(chunk: string): void {
    this.pending += chunk;
    let i: number;
    while ((i = this.pending.search(/[\r\n]/)) >= 0) {
      const line = this.pending.slice(0, i);
      this.pending = this.pending.slice(i + 1);
      this.line(line);
    }
    // a runaway line without terminator is not rsync progress: do not grow without bound
    if (this.pending.length > 64 * 1024) this.pending = this.pending.slice(-4096);
  }

  /** Flush the last unterminated line. */
  end(): void {
    if (this.pending !== '') this.line(this.pending);
    this.pending = '';
  }

  /** Everything that was not a progress line (the `--stats` block, messages), newline-joined. */
  get rest(): string {
    return this.text.join('\n');
  }

  private line(line: string): void {
    const p = parseProgressLine(line);
    if (p) {
      this.last = p;
      this.onProgress(p);
      return;
    }
    if (line.trim() === '' || this.textLen > 256 * 1024) return;
    this.text.push(line);
    this.textLen += line.length;
  }
}

export interface RsyncStats {
  totalFileSize?: number;
  /** file data sent as is (not matched on the receiver) */
  literalBytes?: number;
  /** file data the receiver already had (delta transfer / resume) */
  matchedBytes?: number;
  /** all bytes the sending side wrote, protocol included */
  bytesSent?: number;
  bytesReceived?: number;
}

const STATS: [keyof RsyncStats, RegExp][] = [
  ['totalFileSize', /^Total file size:\s+([\d,.']+) bytes/m],
  ['literalBytes', /^Literal data:\s+([\d,.']+) bytes/m],
  ['matchedBytes', /^Matched data:\s+([\d,.']+) bytes/m],
  ['bytesSent', /^Total bytes sent:\s+([\d,.']+)/m],
  ['bytesReceived', /^Total bytes received:\s+([\d,.']+)/m],
];

/** The numbers of rsync's `--stats` block; fields rsync did not print are left out. */
export function parseRsyncStats(text: string): RsyncStats {
  const out: RsyncStats = {};
  for (const [key, re] of STATS) {
    const m = re.exec(text);
    if (!m) continue;
    const n = Number(m[1]!.replace(/[,.']/g, ''));
    if (Number.isSafeInteger(n)) out[key] = n;
  }
  return out;
}

/**
 * What a push of a `total`-byte file sent, from rsync's `--stats` text: the file data that
 * crossed (`Literal data`; a whole file when rsync printed neither) and the bytes on the link
 * (`Total bytes sent`).
 */
export function sentBytes(statsText: string, total: number): { literal: number; wire: number } {
  const stats = parseRsyncStats(statsText);
  const literal = stats.literalBytes ?? stats.bytesSent ?? total;
  return { literal, wire: stats.bytesSent ?? literal };
}
