/**
 * The Hyper-V driver's names, pure: the target name of a hard disk drive (the contract's
 * `DomainDisk.target`), the files a migration creates (`ownFile`), the checkpoint a freeze takes
 * and the files of a saved state. No I/O.
 */
import { type OwnFileKind, ownFileBaseName } from '../driver';
import { WINDOWS_PATHS } from '../windows-paths';

// ---------------------------------------------------------------- disk targets

/**
 * Hyper-V has no device names: a hard disk drive is a place on a controller (`ControllerType`,
 * `ControllerNumber`, `ControllerLocation`). Its target is a name made from that place alone, so
 * it stays the same while the VM lives (adding or removing another disk renames nothing), in the
 * style the manifests already accept (`disks:` keys `sd*`/`hd*`, the status schema's
 * `^[a-z][a-z0-9]{0,31}$`):
 * - SCSI (Hyper-V: 4 controllers of 64 locations): `sd` + letters of `number * 64 + location`,
 *   letters as Linux counts them (`a`..`z`, `aa`..`zz`): SCSI 0:0 is `sda`, 0:1 `sdb`, 1:0 `sdbm`;
 * - IDE (2 controllers of 2 locations, generation 1): `hd` + letters of `number * 2 + location`,
 *   Linux's order: 0:0 `hda` (primary master), 0:1 `hdb`, 1:0 `hdc`, 1:1 `hdd`;
 * - any other controller type (PMEM on newer hosts): its type in lower case, the number, `l`, the
 *   location (`pmem0l0`); it fits the status schema, not the manifests' `disks:` keys.
 * Undefined for a place outside those ranges or a type that is not letters.
 */
export function diskTarget(controllerType: string, number: number, location: number): string | undefined {
  const type = controllerType.toUpperCase();
  const ok = (n: number, max: number): boolean => Number.isSafeInteger(n) && n >= 0 && n < max;
  if (type === 'SCSI')
    return ok(number, 4) && ok(location, 64) ? `sd${letters(number * 64 + location)}` : undefined;
  if (type === 'IDE')
    return ok(number, 2) && ok(location, 2) ? `hd${letters(number * 2 + location)}` : undefined;
  if (!/^[A-Z]{1,8}$/.test(type) || !ok(number, 100) || !ok(location, 1000)) return undefined;
  return `${type.toLowerCase()}${number}l${location}`;
}

/** The controller place a target names (the inverse of {@link diskTarget}); undefined for no such name. */
export function controllerOf(
  target: string,
): { controllerType: string; controllerNumber: number; controllerLocation: number } | undefined {
  const m = /^(sd|hd)([a-z]{1,3})$/.exec(target);
  if (m) {
    const index = indexOfLetters(m[2]!);
    const per = m[1] === 'sd' ? 64 : 2;
    const controllers = m[1] === 'sd' ? 4 : 2;
    const number = Math.floor(index / per);
    if (number >= controllers) return undefined;
    return {
      controllerType: m[1] === 'sd' ? 'SCSI' : 'IDE',
      controllerNumber: number,
      controllerLocation: index % per,
    };
  }
  const o = /^([a-z]{1,8})([0-9]{1,2})l([0-9]{1,3})$/.exec(target);
  if (!o || o[1] === 'sd' || o[1] === 'hd' || o[1] === 'scsi' || o[1] === 'ide') return undefined;
  return {
    controllerType: o[1]!.toUpperCase(),
    controllerNumber: Number(o[2]),
    controllerLocation: Number(o[3]),
  };
}

/** 0 -> a, 25 -> z, 26 -> aa, ... (Linux's disk letters). */
function letters(n: number): string {
  const c = String.fromCharCode(97 + (n % 26));
  return n < 26 ? c : letters(Math.floor(n / 26) - 1) + c;
}

function indexOfLetters(s: string): number {
  let n = 0;
  for (const ch of s) n = n * 26 + (ch.charCodeAt(0) - 96);
  return n - 1;
}

// ---------------------------------------------------------------- our own files

/** Hyper-V opens a differencing disk only as `.avhdx` (or `.vhdx`); vmplace's layers are `.avhdx`. */
export const LAYER_EXTENSION = '.avhdx';
/** The main file of a saved state: Hyper-V's runtime state (`<VM id>.vmrs`), which holds the memory. */
export const STATE_EXTENSION = '.vmrs';
/**
 * The other files of a saved state, named after the main one: the guest state (`<VM id>.vmgs`)
 * and a copy of the VM's configuration (`<VM id>.vmcx`), which registers the saved VM on another
 * host (Import-VM). The configurations of the checkpoints vmplace took go too, under names
 * that carry each checkpoint's id (see {@link checkpointSidecarStem}).
 */
export const STATE_SIDECAR_EXTENSIONS = ['.vmgs', '.vmcx'] as const;
/** The files of a checkpoint's configuration (`Snapshots\<checkpoint id>.*`). */
export const CHECKPOINT_FILE_EXTENSIONS = ['.vmcx', '.vmrs', '.vmgs'] as const;
/** A probe is an empty file; `.tmp` so that nothing on the host takes it for a disk. */
export const PROBE_EXTENSION = '.tmp';

/**
 * vmplace's name for a file of a migration on a Hyper-V host: `ownFileBaseName` (the VM, what
 * the file is, `vmplace-<migration id>`) with the extension Hyper-V needs: `.avhdx` for a layer
 * (Hyper-V refuses a differencing disk under another extension), `.vmrs` for a saved state (its
 * guest state `.vmgs` beside it, see {@link stateSidecars}), `.tmp` for a probe.
 */
export function ownFilePath(dir: string, vm: string, migration: string, kind: OwnFileKind): string {
  const ext =
    kind.what === 'layer' ? LAYER_EXTENSION : kind.what === 'state' ? STATE_EXTENSION : PROBE_EXTENSION;
  return WINDOWS_PATHS.join(dir, `${ownFileBaseName(vm, migration, kind)}${ext}`);
}

/**
 * The other files of the saved state whose main file is `stateFile` (`x.vmrs` has `x.vmgs`);
 * none for a file that is not a `.vmrs`. They go with it: removed, checked and copied together.
 */
export function stateSidecars(stateFile: string): string[] {
  const stem = stateStem(stateFile);
  return stem === undefined ? [] : STATE_SIDECAR_EXTENSIONS.map((e) => `${stem}${e}`);
}

/**
 * `x` of the saved state `x.vmrs` (its path without the extension), the name every file that
 * goes with it starts with; undefined for a file that is not a `.vmrs`.
 */
export function stateStem(stateFile: string): string | undefined {
  return stateFile.toLowerCase().endsWith(STATE_EXTENSION)
    ? stateFile.slice(0, -STATE_EXTENSION.length)
    : undefined;
}

/** A checkpoint id as Hyper-V writes it (a GUID, lower case in file names). */
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Is `id` a GUID as Hyper-V writes VM and checkpoint ids (the only ids that reach a file name)? */
export function isGuid(id: string): boolean {
  return GUID.test(id);
}

/**
 * The stem of the copies of checkpoint `id`'s configuration files beside the saved state
 * `stateFile` (`x.vmrs`): `x.checkpoint-<id>`, to which `.vmcx`, `.vmrs`, `.vmgs` are added.
 * Undefined for an id that is not a GUID (nothing else reaches a file name).
 */
export function checkpointSidecarStem(stateFile: string, id: string): string | undefined {
  const stem = stateStem(stateFile);
  return stem === undefined || !GUID.test(id) ? undefined : `${stem}.checkpoint-${id.toLowerCase()}`;
}

/** One file that goes with a saved state, as {@link stateSidecarsIn} reads it from its name. */
export interface StateSidecar {
  path: string;
  /** the VM's own (`.vmgs`, `.vmcx`), or the configuration of checkpoint `checkpoint` */
  checkpoint?: string;
  /** `vmgs`, `vmcx` or (a checkpoint's) `vmrs` */
  kind: string;
}

/**
 * The files among `names` (file names in the saved state's folder) that go with the saved state
 * `stateFile`: its fixed sidecars ({@link stateSidecars}) and its checkpoint configuration copies
 * (`x.checkpoint-<GUID>.vmcx|vmrs|vmgs`), compared without regard to case as Windows does. Any
 * other name (a part file, another migration's state) is not one of them.
 */
export function stateSidecarsIn(stateFile: string, names: readonly string[]): StateSidecar[] {
  const full = stateStem(stateFile);
  if (full === undefined) return [];
  const dir = WINDOWS_PATHS.dirname(stateFile);
  const stem = WINDOWS_PATHS.basename(full).toLowerCase();
  const out: StateSidecar[] = [];
  for (const name of names) {
    const lower = name.toLowerCase();
    if (!lower.startsWith(`${stem}.`)) continue;
    const rest = lower.slice(stem.length + 1);
    const fixed = STATE_SIDECAR_EXTENSIONS.find((e) => rest === e.slice(1));
    if (fixed) {
      out.push({ path: WINDOWS_PATHS.join(dir, name), kind: fixed.slice(1) });
      continue;
    }
    const m = /^checkpoint-([0-9a-f-]{36})\.(vmcx|vmrs|vmgs)$/.exec(rest);
    if (m && GUID.test(m[1]!))
      out.push({ path: WINDOWS_PATHS.join(dir, name), checkpoint: m[1]!, kind: m[2]! });
  }
  // checkpoints' files first, the VM's configuration and guest state last (the main file after all)
  return out.sort((a, b) => Number(!a.checkpoint) - Number(!b.checkpoint) || a.path.localeCompare(b.path));
}

/**
 * Where a saved VM whose state `stateFile` was copied to this host is registered (Import-VM
 * -Register keeps a VM's configuration where it is): the folder `x.import` beside `x.vmrs`, laid
 * out as Hyper-V expects (`Virtual Machines\<VM id>.vmcx|vmrs|vmgs`, `Snapshots\<checkpoint
 * id>.*`), its files hard links to the verified copies. It stays the VM's configuration folder.
 */
export function importRoot(stateFile: string): string | undefined {
  const stem = stateStem(stateFile);
  return stem === undefined ? undefined : `${stem}.import`;
}

/** What an own layer's name says: the migration and the round (see {@link ownFilePath}). */
export interface OwnLayerName {
  migration: string;
  round: number;
}

/**
 * Reads a name {@link ownFilePath} gave a layer of `vm`'s disk `target` (any directory, compared
 * without regard to case as Windows does); undefined for any other name.
 */
export function parseOwnLayer(path: string, vm: string, target: string): OwnLayerName | undefined {
  const base = WINDOWS_PATHS.basename(path);
  const head = `${vm}.${target}.overlay`.toLowerCase();
  if (!base.toLowerCase().startsWith(head) || !base.toLowerCase().endsWith(LAYER_EXTENSION)) return undefined;
  const rest = base.slice(head.length, base.length - LAYER_EXTENSION.length);
  const m = /^([0-9]*)\.vmplace-([A-Za-z0-9][A-Za-z0-9_-]*)$/.exec(rest);
  if (!m) return undefined;
  const round = m[1] === '' ? 1 : Number(m[1]);
  if (!Number.isSafeInteger(round) || round < 2 === (m[1] !== '')) return undefined;
  const migration = m[2]!;
  // the name must be exactly the one ownFilePath gives (so `overlay1` or `overlay02` is not ours)
  const again = ownFilePath('C:\\x', vm, migration, { what: 'layer', disk: target, round });
  return WINDOWS_PATHS.basename(again).toLowerCase() === base.toLowerCase()
    ? { migration, round }
    : undefined;
}

/**
 * The name of the checkpoint that freezes a VM's disks for round `round` of `migration`:
 * `vmplace-<migration id>` (round 1), `vmplace-<migration id>-r<round>` after. A checkpoint is
 * merged by vmplace only when it has such a name (never one a person or a backup took).
 */
export function checkpointName(migration: string, round: number): string {
  return round <= 1 ? `vmplace-${migration}` : `vmplace-${migration}-r${round}`;
}

/** The migration and round of a checkpoint named by {@link checkpointName}; undefined for any other. */
export function parseCheckpointName(name: string): OwnLayerName | undefined {
  const m = /^vmplace-([A-Za-z0-9][A-Za-z0-9_-]*?)(?:-r([0-9]+))?$/.exec(name);
  if (!m) return undefined;
  const round = m[2] === undefined ? 1 : Number(m[2]);
  if (round < 2 && m[2] !== undefined) return undefined;
  return checkpointName(m[1]!, round) === name ? { migration: m[1]!, round } : undefined;
}
