/**
 * Copying a file to another host **while it is being written**: the memory state that
 * `virsh save` writes inside a VM's pause. Without this, the state file (83 MB for the lab's
 * 256 MiB guest) crosses hosts only after the save has ended, and the copy is most of the pause
 * on hosts that share no storage (bench/NOTES.md, 2026-12-03: save ~0.36 s, then ~0.65 s for the
 * state file's copy and verification).
 *
 * How: one pipeline started on the source host through its `HostExec`, as one argv:
 *
 *     perl STREAMER SRC HASH | ssh <the copy's options> -- TARGET 'perl WRITER PART HASH'
 *
 * - The streamer (perl-base, Essential on Debian) follows SRC as it grows and sends each new
 *   range in frames (`D` offset length bytes). It waits for SRC to appear, starts over when SRC
 *   shrinks or is replaced. The management box tells it that SRC is complete (the save has ended)
 *   by writing `F` to its standard input (the pipeline's, forwarded by ssh); end of input without
 *   `F` aborts it.
 *   Then it sends what is left, the first 64 KiB and the last 1 MiB again (a writer may finish by
 *   rewriting its header, as libvirt does with its save image's magic), the final size and mode
 *   (`T`), and the sha256 of SRC read anew through read() (`H`), then `E`.
 * - The writer opens PART (never following a symlink), writes each frame at its offset, truncates
 *   it to the final size, hashes it (read(), beside the source's hash, and beside a `sync` of it)
 *   and prints both digests and the size. Anything short of `E` exits non-zero.
 * - The writer also says how it gets on (`P` every 16 MiB written, `T SIZE` before it hashes): once
 *   the source is complete, a stream that goes 60 s without such a line (plus the time both
 *   hashes may take at 50 MB/s) is stopped, as rsync's `--timeout` would, and the copy falls back.
 *
 * Nothing here is trusted to be right: the box compares the two digests (the source's, of the
 * file as it is after the save, and the part's, of what arrived), and anything but equal digests
 * (a writer that rewrote more than its header, a stream cut short, no perl) hands the copy to
 * rsync, which finds the part as its basis and sends only what differs. The part is renamed
 * only by the usual finish (flush, link, directory flush).
 *
 * `copyByStream` is `copyBetweenHosts`'s way for such a source (`sourceGrows`).
 *
 * The perl texts are passed as arguments and through `quoteShellArgs` for the remote side: no
 * path reaches a shell unquoted.
 */
import { VmplaceError } from '../errors';
import { quoteShellArgs } from '../exec/exec';
import type { HostExec } from '../exec/types';
import type { SshSpec } from '../types';
import type { CopyBetweenHostsOptions, CopyBetweenHostsResult } from './between-hosts';
import { PART_SUFFIX, SHA256_SCRIPT } from './copy-local';
import { PERL_OUT_SUB } from './hole-reader';
import { finishOnTarget, statSizes } from './host-files';
import { COPY_CIPHERS, hopSshOptions } from './rsync-direct';
import { localArgv, spawnArgv } from './spawn-stream';

/** Bytes re-sent from the start of the file once it is complete (a rewritten header). */
export const HEAD_BYTES = 64 * 1024;
/** Bytes re-sent from the end of the file once it is complete (a last block rewritten). */
export const TAIL_BYTES = 1024 * 1024;

/** The writer says `P` each time this many more bytes are written (the box's watchdog). */
const PROGRESS_BYTES = 16 * 1024 * 1024;
/**
 * Once the source is complete, how long the stream may go without a sign of progress (`P`, a
 * line of the writer) before it is given up, as rsync's `--timeout` does by default.
 */
const IDLE_TIMEOUT_MS = 60_000;
/** Slowest hash rate allowed for: the writer's and the source's hash run after the last byte. */
const MIN_HASH_BYTES_PER_MS = 50_000;

/**
 * The streamer (arguments: source, hash shell text, poll seconds). Frames on standard output:
 * `D` u64 offset u32 length bytes; `T` u64 size u32 mode; `H` 64 hex; `E`. Exit 2: the source
 * cannot be read (or is gone once complete), 3: input ended without `F`, 4: output closed,
 * 5: no hash.
 */
export const STREAM_PERL = [
  'use strict; use warnings;',
  'my ($src, $hashsh, $poll) = @ARGV;',
  'binmode STDOUT; binmode STDIN;',
  PERL_OUT_SUB,
  'my ($h, $ino, $pos, $fin) = (undef, -1, 0, 0);',
  'sub send_range { my ($p, $e) = @_;',
  '  defined sysseek($h, $p, 0) or exit 2;',
  '  while ($p < $e) { my $k = $e - $p; $k = 1048576 if $k > 1048576;',
  '    my $r = sysread($h, my $b, $k); exit 2 unless defined $r; last unless $r;',
  '    out(pack("a1 Q> N", "D", $p, $r) . $b); $p += $r; }',
  '  return $p; }',
  'my $rin = ""; vec($rin, fileno(STDIN), 1) = 1;',
  'for (;;) {',
  '  my $last = $fin;',
  '  if (!$h) { if (open(my $f, "<", $src)) { binmode $f; $h = $f; $ino = (stat $h)[1]; $pos = 0; } }',
  '  if ($h) {',
  '    my @st = stat($src);',
  '    if (!@st || $st[1] != $ino) { close $h; $h = undef; next; }',
  '    my $s = (stat $h)[7];',
  '    $pos = 0 if $s < $pos;',
  '    $pos = send_range($pos, $s) if $s > $pos;',
  '  } elsif ($last) { exit 2; }',
  '  last if $last;',
  '  my $rout = $rin;',
  '  if (select($rout, undef, undef, $poll) > 0) {',
  '    my $n = sysread(STDIN, my $c, 64); exit 3 unless $n;',
  '    $fin = 1 if index($c, "F") >= 0;',
  '  }',
  '}',
  'my @st = stat $h; my $s = $st[7];',
  `send_range(0, $s < ${HEAD_BYTES} ? $s : ${HEAD_BYTES});`,
  `send_range($s > ${TAIL_BYTES} ? $s - ${TAIL_BYTES} : 0, $s);`,
  'out(pack("a1 Q> N", "T", $s, $st[2] & 511));',
  'open(my $hp, "-|", "sh", "-c", $hashsh, "vmplace-hash", $src) or exit 5;',
  'my $d = <$hp>; close $hp or exit 5;',
  'exit 5 unless defined $d && $d =~ /^([0-9a-f]{64})/;',
  'out("H" . $1 . "E");',
  'exit 0;',
].join('\n');

/**
 * The writer (arguments: part, hash shell text). Reads the frames from standard input; prints `P`
 * after every `PROGRESS_BYTES` written, `T SIZE` when it has the final size (its hash starts), and
 * `SRC DST SIZE` (the two sha256) at the end. Exit 2: the part cannot be written, 3: the stream
 * ended early or is not understood, 5: no hash.
 */
export const WRITE_PERL = [
  'use strict; use warnings; use Fcntl;',
  'my ($part, $hashsh) = @ARGV;',
  'binmode STDIN; $| = 1;',
  `my ($said, $sent) = (0, 0);`,
  'sysopen(my $w, $part, O_WRONLY | O_CREAT | O_NOFOLLOW, 0600) or exit 2;',
  'sub rd { my $n = $_[0]; my $b = "";',
  '  while (length($b) < $n) { my $r = sysread(STDIN, $b, $n - length($b), length($b)); exit 3 unless $r; }',
  '  return $b; }',
  'my ($src, $hp, $size, $sp);',
  'for (;;) {',
  '  my $t = rd(1);',
  '  if ($t eq "D") { my ($o, $n) = unpack("Q> N", rd(12)); my $b = rd($n);',
  '    defined sysseek($w, $o, 0) or exit 2; my $k = 0;',
  '    while ($k < $n) { my $m = syswrite($w, $b, $n - $k, $k); exit 2 unless $m; $k += $m; }',
  `    $sent += $n; if ($sent - $said >= ${PROGRESS_BYTES}) { print "P\\n"; $said = $sent; } }`,
  '  elsif ($t eq "T") { my $m; ($size, $m) = unpack("Q> N", rd(12));',
  '    truncate($w, $size) or exit 2; chmod($m & 511, $w) or exit 2; print "T $size\\n";',
  // the part written back while it is hashed (the finish then finds little left to flush)
  '    $sp = fork; if (defined $sp && $sp == 0) { exec("sync", "--", $part); exit 2; }',
  '    open($hp, "-|", "sh", "-c", $hashsh, "vmplace-hash", $part) or exit 5; }',
  '  elsif ($t eq "H") { $src = rd(64); }',
  '  elsif ($t eq "E") { last; }',
  '  else { exit 3; }',
  '}',
  'exit 3 unless defined $src && $hp;',
  'my $d = <$hp>; close $hp or exit 5;',
  'waitpid($sp, 0) if $sp;',
  'exit 5 unless defined $d && $d =~ /^([0-9a-f]{64})/;',
  'print "$src $1 $size\\n";',
  'exit 0;',
].join('\n');

/** `$1` source, `$2` streamer, `$3` hash text, `$4` poll; then ssh's argv for the target. */
const PIPE_SCRIPT =
  'src=$1 stream=$2 hash=$3 poll=$4; shift 4\nperl -e "$stream" -- "$src" "$hash" "$poll" | ssh "$@"';

export interface StreamedDigests {
  /** sha256 of the source once complete, read anew on the source host */
  source: string;
  /** sha256 of the part as written on the target */
  part: string;
  /** the source's final size (the part's) */
  bytes: number;
}

export interface GrowingStream {
  /**
   * Resolves once the stream has ended: both digests when it completed, undefined when it did
   * not (the reason in `why`). Never rejects.
   */
  readonly ended: Promise<StreamedDigests | undefined>;
  /** why the stream did not complete, once `ended` has resolved to undefined */
  why(): string | undefined;
  /** the source is complete: send the rest and the digests */
  finish(): void;
  /** stop now (the source will not be complete); `ended` resolves to undefined */
  abort(): void;
}

/**
 * Start streaming `src` (on `srcHost`, being written) to `part` on the target reached from the
 * source host as `target`. Undefined when `srcHost` cannot run a streaming command.
 */
export function streamGrowing(
  srcHost: HostExec,
  src: string,
  part: string,
  target: SshSpec,
  opts: { pollSec?: number; idleTimeoutMs?: number } = {},
): GrowingStream | undefined {
  const argv = localArgv(srcHost, [
    'sh',
    '-c',
    PIPE_SCRIPT,
    'vmplace-stream',
    src,
    STREAM_PERL,
    SHA256_SCRIPT,
    String(opts.pollSec ?? 0.005),
    ...hopSshOptions(target),
    '-o',
    `Ciphers=${COPY_CIPHERS}`,
    '--',
    target.host,
    quoteShellArgs(['perl', '-e', WRITE_PERL, '--', part, SHA256_SCRIPT]),
  ]);
  if (!argv) return undefined;
  let why: string | undefined;
  const p = spawnArgv(argv, ['pipe', 'pipe', 'pipe']);
  // the writer's lines: progress (`P`, `T SIZE`) feeds the watchdog, the last one is the result
  let line = '';
  let last = '';
  let watchdog: (() => void) | undefined;
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  let allowMs = idleMs;
  p.child.stdout?.setEncoding('utf8');
  p.child.stdout?.on('data', (chunk: string) => {
    line += chunk;
    for (let i = line.indexOf('\n'); i >= 0; i = line.indexOf('\n')) {
      const l = line.slice(0, i);
      line = line.slice(i + 1);
      const t = /^T ([0-9]+)$/.exec(l);
      // both hashes run once the size is known: as long again as reading the file takes
      if (t) allowMs = idleMs + Math.ceil(Number(t[1]) / MIN_HASH_BYTES_PER_MS);
      else if (l !== 'P') last = l;
    }
    watchdog?.();
  });
  p.child.stdin?.on('error', () => undefined); // a pipeline that died first: seen in `ended`
  const ended = p.done.then(
    (r) => {
      const m = /^([0-9a-f]{64}) ([0-9a-f]{64}) ([0-9]+)$/.exec(last);
      if (r.exitCode === 0 && m) return { source: m[1]!, part: m[2]!, bytes: Number(m[3]) };
      why ??= `stream ended with ${r.exitCode ?? r.signal}: ${r.stderr.trim().slice(0, 300)}`;
      return undefined;
    },
    (err: Error) => {
      why ??= `stream did not start: ${err.message}`;
      return undefined;
    },
  );
  const abort = (reason: string): void => {
    why ??= reason;
    p.child.kill('SIGTERM');
    // and stop reading: what the command started and still holds its output must not keep the
    // stream "running" (over ssh the remote side ends with the connection)
    p.child.stdin?.destroy();
    p.child.stdout?.destroy();
    p.child.stderr?.destroy();
  };
  return {
    ended,
    why: () => why,
    finish: () => {
      p.child.stdin?.end('F\n');
      // a stream that stops progressing (a target that no longer takes data) is given up; the
      // caller's usual copy has its own timeouts
      let timer: NodeJS.Timeout | undefined;
      watchdog = () => {
        clearTimeout(timer);
        timer = setTimeout(() => abort(`stream made no progress for ${allowMs} ms`), allowMs);
      };
      watchdog();
      void ended.finally(() => clearTimeout(timer));
    },
    abort: () => abort('aborted'),
  };
}

/**
 * `copyBetweenHosts` with `sourceGrows`: stream the source to the part while it is written, then,
 * the digests equal, the usual finish (flush, link without replacing, directory flush). Returns
 * why not when the usual copy must run: a target that already has `dst` (the usual way tells done
 * from different), no streaming on this exec, a stream that failed or digests that differ (the
 * part stays: rsync takes it as its basis). Rejects with `sourceReady`'s reason, the part removed,
 * when the source will not be complete, and when aborted.
 */
export async function copyByStream(
  srcHost: HostExec,
  dstHost: HostExec,
  src: string,
  dst: string,
  opts: CopyBetweenHostsOptions,
  guarded: Promise<unknown>,
  t0: number,
): Promise<CopyBetweenHostsResult | { fallback: string }> {
  const part = `${dst}${PART_SUFFIX}`;
  const [[dstSize]] = await Promise.all([statSizes(dstHost, [dst]), guarded]);
  if (dstSize !== undefined) return { fallback: `${dst} exists` };
  const s = streamGrowing(srcHost, src, part, opts.targetSsh!);
  if (!s) return { fallback: 'the source host runs no streaming command' };
  const onAbort = (): void => s.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    try {
      await opts.sourceReady;
    } catch (err) {
      // the source will not be complete: what the stream wrote goes
      s.abort();
      await s.ended;
      await dstHost.run(['rm', '-f', '--', part]).catch(() => undefined);
      throw err;
    }
    s.finish();
    const r = await s.ended;
    if (opts.signal?.aborted)
      throw new VmplaceError('Cancelled', `copy of ${src} to ${dstHost.label} cancelled`);
    if (!r) return { fallback: s.why() ?? 'stream failed' };
    if (r.source !== r.part)
      return { fallback: `digests differ after the stream (${r.part}, not ${r.source})` };
    const finished = await finishOnTarget(dstHost, part, dst, undefined);
    if (finished.mismatch !== undefined) return { fallback: 'the finish found a mismatch' };
    opts.onProgress?.(r.bytes, r.bytes);
    return {
      bytes: r.bytes,
      sha256: r.source,
      alreadyDone: false,
      mode: 'direct',
      resumedFromBytes: 0,
      bytesSent: r.bytes,
      wireBytes: r.bytes,
      durationMs: Date.now() - t0,
      channel: 'ssh',
      streamed: true,
    };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
