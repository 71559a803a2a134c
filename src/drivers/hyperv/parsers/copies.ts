/** Readers of scripts/copies.ts's answers. */
import { ParseError } from '../../../errors';
import { bool, single, size, str } from './common';

/** tcpReachable's answer. */
export function parseReachable(result: unknown): boolean {
  return bool(single(result, 'TCP probe'), 'Reachable', 'TCP probe');
}

/** scpToHost's answer. */
export function parseCopied(result: unknown): true {
  if (!bool(single(result, 'scp'), 'Copied', 'scp')) throw new ParseError('scp', 'Copied is false');
  return true;
}

/** finishCopy's answer: the part's SHA-256 and whether it now has its final name. */
export function parseFinishCopy(result: unknown): { hash: string; moved: boolean } {
  const what = 'finish copy';
  const o = single(result, what);
  const hash = str(o, 'Hash', what);
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new ParseError(what, `not a SHA-256: ${JSON.stringify(hash)}`);
  return { hash, moved: bool(o, 'Moved', what) };
}

/** copyIntoPart's answer: bytes copied. */
export function parseCopiedLength(result: unknown): number {
  return size(single(result, 'local copy'), 'Length', 'local copy');
}
