/**
 * What the scripts of scripts/ are built from: {@link script}, which binds each value to a
 * variable through {@link psQuote} and wraps the body with {@link psScript}; {@link listOf} for a
 * list of values; and the PowerShell functions several scripts define (`Vm`, `Drives`, `VmOut`,
 * `Vhd`, `VhdOut`, `VmState`, `Fid`). Internal to the scripts: scripts.ts does not re-export it.
 */
import { psQuote, psScript } from '../powershell';

/** Names of the variables values are bound to: our own identifiers, never a value. */
const VARIABLE = /^[a-z][A-Za-z0-9]*$/;

export function script(
  values: Record<string, string>,
  body: string,
  helpers: readonly string[] = [],
): string {
  const bind = Object.entries(values).map(([name, value]) => {
    if (!VARIABLE.test(name)) throw new TypeError(`scripts: bad variable name ${name}`);
    return `$${name}=${psQuote(value)}`;
  });
  return psScript([...bind, body].join('\n'), helpers);
}

// ---------------------------------------------------------------- helpers (PowerShell functions)

/** `Vm NAME`: the one VM of that name, or a `VmNotFound` / `VmNameAmbiguous` error. */
export const VM = [
  'function Vm($n){$v=@(Get-VM|Where-Object{$_.Name -eq $n})',
  "if($v.Count -eq 0){Fail VmNotFound ObjectNotFound 'no VM of that name'}",
  "if($v.Count -gt 1){Fail VmNameAmbiguous InvalidResult 'several VMs of that name'}",
  '$v[0]}',
].join('\n');

/** `Drives LIST`: hard disk drives (`Get-VMHardDiskDrive` objects) as plain records. */
export const DRIVES =
  'function Drives($d){foreach($x in $d){[pscustomobject]@{Path=$x.Path;ControllerType=[string]$x.ControllerType;ControllerNumber=$x.ControllerNumber;ControllerLocation=$x.ControllerLocation}}}';

/** `VmOut VM`: what the driver reads of a VM (a `VirtualMachine` object of Get-VM), with its drives. */
export const VM_OUT = [
  'function VmOut($v){[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State;Status=$v.Status',
  'OperationalStatus=@(foreach($s in $v.OperationalStatus){[string]$s})',
  'MemoryStartup=[string]$v.MemoryStartup;ProcessorCount=$v.ProcessorCount;Version=[string]$v.Version;Generation=$v.Generation',
  'Path=$v.Path;ConfigurationLocation=$v.ConfigurationLocation;SnapshotFileLocation=$v.SnapshotFileLocation',
  'AutomaticStartAction=[string]$v.AutomaticStartAction;HardDrives=@(Drives(Get-VMHardDiskDrive -VM $v))}}',
].join('\n');

/** `Vhd PATH`: the one `VirtualHardDisk` Get-VHD answers for the path, or `VhdAmbiguous`. */
export const VHD = [
  'function Vhd($p){$h=@(Get-VHD -Path $p)',
  "if($h.Count -ne 1){Fail VhdAmbiguous InvalidResult 'Get-VHD did not answer with one disk'}",
  '$h[0]}',
].join('\n');

/** `VhdOut VHD`: a `VirtualHardDisk` object with its sizes as strings. */
export const VHD_OUT = [
  'function VhdOut($h){[pscustomobject]@{Path=$h.Path;VhdFormat=[string]$h.VhdFormat;VhdType=[string]$h.VhdType',
  'FileSize=[string]$h.FileSize;Size=[string]$h.Size;MinimumSize=[string]$h.MinimumSize;ParentPath=$h.ParentPath',
  'DiskIdentifier=[string]$h.DiskIdentifier;Attached=$h.Attached;BlockSize=[string]$h.BlockSize',
  'LogicalSectorSize=[string]$h.LogicalSectorSize;PhysicalSectorSize=[string]$h.PhysicalSectorSize}}',
].join('\n');

/** `VmState VM`: name, id and state of the VM as Hyper-V sees it now (Get-VM -Id). */
export const VM_STATE =
  'function VmState($v){$w=Get-VM -Id $v.Id;[pscustomobject]@{Name=$w.Name;Id=[string]$w.Id;State=[string]$w.State;Status=$w.Status}}';

/**
 * Values of a list bound to `$<prefix>0`, `$<prefix>1`, ... and the code `@($p0,$p1,...)` that
 * names them (our identifiers only; the values themselves go through {@link psQuote}).
 */
export function listOf(
  prefix: string,
  values: readonly string[],
): { values: Record<string, string>; code: string } {
  const bound = Object.fromEntries(values.map((v, i) => [`${prefix}${i}`, v]));
  return { values: bound, code: `@(${values.map((_v, i) => `$${prefix}${i}`).join(',')})` };
}

/**
 * `Fid PATH`: the text `fsutil file queryfileid` prints for the file (its id, one `0x` number in
 * localized words); a path with `"` is refused (`BadPath`, see {@link fileInfo}).
 */
export const FID = [
  "function Fid($p){if($p.IndexOf([char]34) -ge 0){Fail BadPath InvalidArgument 'a path with a double quote'}",
  '$t=@(& fsutil.exe file queryfileid $p)',
  "if($LASTEXITCODE -ne 0){Fail FileIdUnavailable ReadError ('fsutil file queryfileid exited '+$LASTEXITCODE)}",
  '[string]::Join([char]10,$t)}',
].join('\n');
