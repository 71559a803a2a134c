/**
 * Readers of scripts/lifecycle.ts's answers (parseRemoved also reads removeCheckpoint's and
 * removeFile's).
 */
import { ParseError } from '../../../errors';
import { bigSizeOf, bool, enumName, int, isRec, list, records, single, str, strings } from './common';
import { fileIdOfText } from './files';
import { type HvIncompatibility, parseIncompatibilities } from './migrate';
import { type HvVmState, parseVmStates } from './observe';

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

/** filesNamed's answer: file names (no folder). */
export function parseFileNames(result: unknown): string[] {
  return strings(single(result, 'file names'), 'Names', 'file names');
}

/** copyConfiguration's answer: the files copied, `{ from, to }`. */
export function parseConfigCopies(result: unknown): { from: string; to: string }[] {
  const what = 'configuration copies';
  return records(result, what).map((o) => ({ from: str(o, 'From', what), to: str(o, 'To', what) }));
}

/** hardLinks' answer: how many names were made. */
export function parseLinked(result: unknown): number {
  return int(single(result, 'hard links'), 'Linked', 'hard links');
}

/** importSavedVm's answer. */
export type HvImported =
  { imported: true; vm: HvVmState } | { imported: false; incompatibilities: HvIncompatibility[] };

export function parseImported(result: unknown): HvImported {
  const what = 'Import-VM';
  const o = single(result, what);
  if (bool(o, 'Imported', what)) {
    const vm = parseVmStates([o.Vm])[0];
    if (!vm) throw new ParseError(what, 'Vm is missing');
    return { imported: true, vm };
  }
  const incompatibilities = parseIncompatibilities(list(o, 'Incompatibilities', what));
  if (incompatibilities.length === 0)
    throw new ParseError(what, 'not imported, and no incompatibility given');
  return { imported: false, incompatibilities };
}
