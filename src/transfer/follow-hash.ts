/**
 * Hashing a part file on the target while the copy writes it, so that the target's sha256 is
 * (almost) done when the data is: a second read of what was written, from the page cache the
 * copy just filled, instead of a read of the whole file after the copy.
 *
 * Only for a fresh copy (an empty or missing part file): rsync `--inplace` and the relay's `dd`
 * then write the part strictly in order (holes are skipped by seeking, never filled in later),
 * so every byte below the part's current size is final once it is there. A resumed copy
 * rewrites bytes below that size and is hashed after the copy instead.
 *
 * Holes are not read: where the host has perl, one perl process follows the part and reads
 * only its data, its holes fed as zeros (`hole-reader.ts`: why, and why that is sound for a
 * fresh part). The follower reading holes through read() slowed the copy beside it from ~3 s to
 * 5.4-6.2 s for a 1 GiB part with 512 MiB of holes (bench/NOTES.md, 2026-12-03). Without perl
 * the follower is the shell loop with `dd` (every byte read).
 *
 * The follower is only a shortcut: when its digest equals the source's, the part was read back
 * equal to the source after it was written; any other outcome (a different digest, a failure,
 * a follower that stops following) leaves the decision to the full hash after the copy, which
 * reads every byte through read().
 */
import type { HostExec } from '../exec/types';
import { HASHER_SH } from './copy-local';
import { HAVE_PERL_SH, PERL_RANGE_SUBS } from './hole-reader';
import { localArgv, runStreaming } from './spawn-stream';

/** Largest piece read per step: the follower reports its position at least this often. */
const STEP_BYTES = 256 * 1024 * 1024;
/** How long the follower waits between looks at a part that did not grow (or grew little). */
const POLL_SEC = 0.02;
/**
 * A step smaller than this is followed by a pause too: a slow (bandwidth-limited) copy is then
 * looked at 50 times a second, not as often as `stat` and `dd` can start.
 */
const SMALL_STEP_BYTES = 8 * 1024 * 1024;

/**
 * The follower in perl (arguments: part, total bytes, polls without growth before giving up,
 * 1 to flush): one process, the part opened once (a part replaced under it ends it), each
 * new range written to standard output with its holes as zeros (see the file comment), the
 * position after each step and `.` after each empty look written to fd 3, one `sync -d` of the
 * part kept running in the background. Exit codes as the shell loop's.
 */
const FOLLOW_PERL = [
  'use strict; use warnings; use POSIX ();',
  'my ($part, $total, $idle, $flush) = @ARGV;',
  "open(my $prog, '>&=', 3) or exit 5;",
  '{ my $o = select($prog); $| = 1; select($o); }',
  'my ($n, $w, $f, $h, $ino) = (0, 0, 0, undef, -1);',
  PERL_RANGE_SUBS,
  'while ($n < $total) {',
  '  my @st = stat($part); my $s = @st ? $st[7] : 0;',
  '  $s = $total if $s > $total;',
  `  $s = $n + ${STEP_BYTES} if $s > $n + ${STEP_BYTES};`,
  '  if ($s > $n) {',
  "    if (!$h) { open($h, '<', $part) or exit 2; binmode $h; $ino = (stat $h)[1]; }",
  '    exit 2 if $st[1] != $ino;',
  '    range($h, $n, $s);',
  '    my $step = $s - $n; $n = $s; $w = 0;',
  '    if ($flush && (!$f || waitpid($f, POSIX::WNOHANG()) != 0)) {',
  '      $f = fork();',
  "      if (defined $f && $f == 0) { open(STDIN, '<', '/dev/null'); open(STDOUT, '>', '/dev/null'); open(STDERR, '>', '/dev/null'); POSIX::close(3); exec('sync', '-d', '--', $part); POSIX::_exit(127); }",
  '      $f = 0 unless defined $f;',
  '    }',
  '    print $prog "$n\\n" or exit 4;',
  `    select(undef, undef, undef, ${POLL_SEC}) if $step < ${SMALL_STEP_BYTES};`,
  '  } else {',
  '    exit 3 if ++$w > $idle;',
  '    print $prog ".\\n" or exit 4;',
  `    select(undef, undef, undef, ${POLL_SEC});`,
  '  }',
  '}',
].join('\n');

/**
 * `$1` part, `$2` total bytes, `$3` polls without growth before giving up, `$4` 1 to flush,
 * `$5` the perl follower, `$6` `dd` to use the shell loop even where perl is. Runs the perl
 * follower where the host has perl; otherwise reads the part's new bytes as its size grows
 * (`dd`, at most STEP_BYTES per step). Either way into `openssl dgst -sha256` (else `sha256sum`)
 * until `total` bytes went in, with one `sync -d` of the part running in the background
 * meanwhile (the data is written back while the copy runs instead of after it). Prints the
 * position after each step and `.` after each empty look (a write to a closed connection ends
 * it: nothing lingers on the host once the client is gone), then the digest line.
 */
const FOLLOW_SCRIPT = [
  'part=$1 total=$2 idle=$3 flush=$4',
  'exec 3>&1',
  HASHER_SH,
  HAVE_PERL_SH,
  'if [ "$6" != dd ] && haveperl; then',
  '  perl -e "$5" -- "$part" "$total" "$idle" "$flush" | hasher',
  '  exit',
  'fi',
  '{',
  '  n=0 w=0 f=',
  '  while [ "$n" -lt "$total" ]; do',
  '    s=$(stat -c %s -- "$part" 2>/dev/null) || s=0',
  '    [ "$s" -gt "$total" ] && s=$total',
  `    [ "$s" -gt $((n + ${STEP_BYTES})) ] && s=$((n + ${STEP_BYTES}))`,
  '    if [ "$s" -gt "$n" ]; then',
  '      dd if="$part" bs=1M iflag=skip_bytes,count_bytes skip="$n" count=$((s - n)) status=none || exit 2',
  '      step=$((s - n)) n=$s w=0',
  // start writing back what was read (one flush at a time, in the background, its output
  // closed so it never holds the connection): the flush after the copy has little left to do
  '      if [ "$flush" = 1 ] && { [ -z "$f" ] || ! kill -0 "$f" 2>/dev/null; }; then sync -d -- "$part" </dev/null >/dev/null 2>&1 3>&- & f=$!; fi',
  '      echo "$n" >&3 || exit 4',
  `      [ "$step" -lt ${SMALL_STEP_BYTES} ] && sleep ${POLL_SEC}`,
  '    else',
  '      w=$((w + 1))',
  '      [ "$w" -gt "$idle" ] && exit 3',
  '      echo . >&3 || exit 4',
  `      sleep ${POLL_SEC}`,
  '    fi',
  '  done',
  '} | hasher',
].join('\n');

export interface Follower {
  /**
   * The digest of what the follower read (undefined when it failed, gave up or was stopped).
   * Call once the copy finished; it stops the follower when it does not move on for `stallMs`.
   */
  digest(stallMs?: number): Promise<string | undefined>;
  /** stop now (the copy failed) */
  stop(): void;
}

/**
 * Start hashing `part` on `host` as it grows to `total` bytes. Undefined when `host` cannot
 * stream (neither `SshExec` nor `LocalExec`). `reader: 'dd'` uses the shell loop even where the
 * host has perl (tests of both).
 */
export function followHash(
  host: HostExec,
  part: string,
  total: number,
  idleSec: number,
  opts: { flush?: boolean; reader?: 'auto' | 'dd' } = {},
): Follower | undefined {
  const argv = [
    'sh',
    '-c',
    FOLLOW_SCRIPT,
    'vmplace-follow',
    part,
    String(total),
    String(Math.ceil(idleSec / POLL_SEC)),
    opts.flush === false ? '0' : '1',
    FOLLOW_PERL,
    opts.reader ?? 'auto',
  ];
  if (!localArgv(host, argv)) return undefined;
  const ac = new AbortController();
  let buf = '';
  let hex: string | undefined;
  let lastMove = Date.now();
  const done = runStreaming(
    host,
    argv,
    (chunk) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line === '.') continue; // it looked and the part had not grown
        lastMove = Date.now();
        const m = /^\\?([0-9a-f]{64})\s/.exec(`${line} `);
        if (m) hex = m[1];
      }
    },
    ac.signal,
  ).then(
    () => hex,
    () => undefined,
  );
  return {
    async digest(stallMs = 2000) {
      const copyDone = Date.now();
      lastMove = Math.max(lastMove, copyDone);
      // the copy is complete: a follower that does not move on for stallMs has lost track
      const watchdog = setInterval(() => {
        if (Date.now() - lastMove > stallMs) ac.abort();
      }, 100);
      try {
        return await done;
      } finally {
        clearInterval(watchdog);
      }
    },
    stop() {
      ac.abort();
    },
  };
}
