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
 * The follower is only a shortcut: when its digest equals the source's, the part was read back
 * equal to the source after it was written; any other outcome (a different digest, a failure,
 * a follower that stops following) leaves the decision to the full hash after the copy.
 */
import type { HostExec } from '../exec/types';
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
 * `$1` part, `$2` total bytes, `$3` polls without growth before giving up, `$4` 1 to flush. Reads the part's new
 * bytes as its size grows (`dd`, at most STEP_BYTES per step) into `openssl dgst -sha256` (else
 * `sha256sum`) until `total` bytes went in, and keeps one `sync -d` of the part running in the
 * background meanwhile (the data is written back while the copy runs instead of after it). Prints the position after each step and `.` after
 * each empty look (a write to a closed connection ends it: nothing lingers on the host once the
 * client is gone), then the digest line.
 */
const FOLLOW_SCRIPT = [
  'part=$1 total=$2 idle=$3 flush=$4',
  'exec 3>&1',
  'hash() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }',
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
  '} | hash',
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
 * stream (neither `SshExec` nor `LocalExec`).
 */
export function followHash(
  host: HostExec,
  part: string,
  total: number,
  idleSec: number,
  opts: { flush?: boolean } = {},
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
