/**
 * Readers of scripts/lifecycle.ts's answers (parseRemoved also reads removeCheckpoint's and
 * removeFile's).
 */
import { ParseError } from '../../../errors';
import { bigSizeOf, bool, enumName, isRec, list, single, str } from './common';
import { fileIdOfText } from './files';

/** `{ Removed }` of removeVm, removeCheckpoint and removeFile. */
export function parseRemoved(result: unknown): boolean {
  return bool(single(result, 'removal'), 'Removed', 'removal');
}

/** stateFiles' answer. */
export interface HvStateFiles {
  name: string;
  id: string;
  state: string;
  /** the configuration files that exist, by kind (`vmrs`, `vmgs`, `vmcx`) */
  files: { kind: string; path: string; fileId: string }[];
}

export function parseStateFiles(result: unknown): HvStateFiles {
  const what = 'VM state files';
  const o = single(result, what);
  return {
    name: str(o, 'Name', what),
    id: str(o, 'Id', what),
    state: enumName(o, 'State', what),
    files: list(o, 'Files', what).map((f) => {
      if (!isRec(f)) throw new ParseError(what, 'a file is not an object');
      const kind = str(f, 'Kind', what);
      if (!['vmrs', 'vmgs', 'vmcx'].includes(kind)) throw new ParseError(what, `kind ${kind}`);
      return { kind, path: str(f, 'Path', what), fileId: fileIdOfText(str(f, 'FileIdText', what), what) };
    }),
  };
}

/** vmUptime's answer. */
export function parseUptime(result: unknown): { name: string; state: string; uptimeTicks: string } {
  const what = 'VM uptime';
  const o = single(result, what);
  const ticks = str(o, 'UptimeTicks', what);
  bigSizeOf(ticks, `${what} UptimeTicks`);
  return { name: str(o, 'Name', what), state: enumName(o, 'State', what), uptimeTicks: ticks };
}
