/**
 * Reading a file that this copy wrote, without reading its holes: a perl text that writes the
 * file's bytes to standard output, its data read and its holes (`SEEK_DATA` / `SEEK_HOLE`) as
 * zeros from memory. perl-base is Essential on Debian; callers fall back to a plain read where a
 * host has no perl.
 *
 * Why: reading a hole through read() fills the page cache with zero pages nothing needs. On the
 * lab machine (bench/NOTES.md, 2026-12-03) reading back a fresh 1 GiB copy with 512 MiB of holes
 * took 5.1 s, 4.2 s of it in the kernel, against 0.76 s once cached and 1.0-1.4 s through this
 * reader (the sha256 of the whole GiB included).
 *
 * Sound only for a **fresh** file, every byte of which came from the copy being checked, hashed
 * against a source read through read() on its own: a data range the filesystem misreports as a
 * hole reads as zeros where the source has data, a mismatch, never a false match. Never used to
 * read a source, nor a file that was there before the copy.
 *
 * The perl text has no single quote, so a shell script may hold it in single quotes.
 */

/** perl sub `out(BUF)`: all of BUF to standard output, exit 4 when it cannot. */
export const PERL_OUT_SUB =
  'sub out { my $o = 0; while ($o < length $_[0]) { my $k = syswrite(STDOUT, $_[0], length($_[0]) - $o, $o); exit 4 unless $k; $o += $k; } }';

/**
 * perl subs: `out(BUF)` writes all of BUF to standard output (exit 4 when it cannot),
 * `zeros(N)` writes N zero bytes, `range(FH, P, S)` writes bytes [P, S) of the open file FH:
 * data read (exit 2 when a read fails), holes as zeros. A `SEEK_DATA` that fails for any other
 * reason than "no data after P" reads the range as data.
 */
export const PERL_RANGE_SUBS = [
  'my $zeros = "\\0" x 1048576;',
  PERL_OUT_SUB,
  'sub zeros { my $k = $_[0]; while ($k > 0) { my $m = $k < 1048576 ? $k : 1048576; out(substr($zeros, 0, $m)); $k -= $m; } }',
  // SEEK_DATA 3, SEEK_HOLE 4 (Linux, FreeBSD, Solaris)
  'sub range { my ($h, $p, $s) = @_;',
  '  while ($p < $s) {',
  '    my $d = sysseek($h, $p, 3);',
  '    if (!defined $d) { $d = $!{ENXIO} ? $s : $p } elsif ($d > $s) { $d = $s }',
  '    zeros($d - $p); $p = $d;',
  '    last if $p >= $s;',
  '    my $e = sysseek($h, $p, 4);',
  '    $e = $s if !defined $e || $e > $s || $e <= $p;',
  '    defined sysseek($h, $p, 0) or exit 2;',
  '    while ($p < $e) { my $k = $e - $p; $k = 4194304 if $k > 4194304; my $r = sysread($h, my $b, $k); exit 2 unless $r; out($b); $p += $r; }',
  '  }',
  '}',
].join('\n');

/**
 * Shell function `haveperl`: true when the host's perl can run the texts here (the modules they
 * load are in Debian's perl-base; some distributions split them into packages of their own).
 */
export const HAVE_PERL_SH =
  'haveperl() { command -v perl >/dev/null 2>&1 && perl -MPOSIX -MErrno -e 1 >/dev/null 2>&1; }';

/** perl program: the whole of the file named by its first argument to standard output (see above). */
export const PERL_READ_FILE = [
  'use strict; use warnings;',
  PERL_RANGE_SUBS,
  'open(my $h, "<", $ARGV[0]) or exit 2; binmode $h;',
  'range($h, 0, (stat $h)[7]);',
].join('\n');

for (const text of [PERL_OUT_SUB, PERL_RANGE_SUBS, PERL_READ_FILE])
  if (text.includes("'")) throw new Error('hole-reader: the perl text must not contain a single quote');
