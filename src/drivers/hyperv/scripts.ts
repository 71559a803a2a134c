/**
 * One PowerShell script per operation of the Hyper-V driver: pure functions from values to the
 * complete script text ({@link psScript}), run by `PowerShellRunner` and read back by the
 * functions of parsers.ts.
 *
 * Rules every script here follows:
 * - a value (a VM or checkpoint name, a path, a host name) enters only through {@link psQuote},
 *   once, bound to a variable on the first lines (`$n='...'`); the body refers to the variable.
 *   Nothing is ever spliced into code;
 * - a VM is found by comparing names (`Where-Object { $_.Name -eq $n }`), never through
 *   `Get-VM -Name`, whose parameter takes wildcards (Microsoft Learn: "Accept wildcard
 *   characters: True"); Hyper-V allows several VMs of one name, so a mutating script refuses
 *   (`VmNameAmbiguous`) rather than act on two, and says `VmNotFound` when there is none;
 * - files are named with `-LiteralPath` or through .NET (`[IO.Directory]`), which take no
 *   wildcards. The VHD cmdlets have only `-Path`; the current reference pages say it takes no
 *   wildcards ("Accept wildcard characters: False"; the Windows Server 2012 R2 page of Get-VHD said
 *   True), so the scripts that read a VHD ask for exactly one answer and report its `Path`, and
 *   the driver compares it with what it asked for;
 * - enums are written as their names (`[string]$v.State`), 64-bit sizes as decimal strings
 *   (`[string]` conversion is culture-invariant in PowerShell), times as ISO 8601 UTC;
 * - the scripts that change something look first and do nothing when the change is already
 *   there (a saved VM is not saved again, a checkpoint of that name is not taken twice), because a
 *   restored migration runs its step again.
 *
 * Cmdlet names, parameters and output properties are from the Microsoft Learn reference for the
 * Hyper-V module (Windows Server 2025 pages, `learn.microsoft.com/powershell/module/hyper-v/`),
 * not observed on a host; where a behaviour is only documented, the function says so.
 */
import { psQuote, psScript } from './powershell';

/** Names of the variables values are bound to: our own identifiers, never a value. */
const VARIABLE = /^[a-z][A-Za-z0-9]*$/;

function script(values: Record<string, string>, body: string, helpers: readonly string[] = []): string {
  const bind = Object.entries(values).map(([name, value]) => {
    if (!VARIABLE.test(name)) throw new TypeError(`scripts: bad variable name ${name}`);
    return `$${name}=${psQuote(value)}`;
  });
  return psScript([...bind, body].join('\n'), helpers);
}

// ---------------------------------------------------------------- helpers (PowerShell functions)

/** `Vm NAME`: the one VM of that name, or a `VmNotFound` / `VmNameAmbiguous` error. */
const VM = [
  'function Vm($n){$v=@(Get-VM|Where-Object{$_.Name -eq $n})',
  "if($v.Count -eq 0){Fail VmNotFound ObjectNotFound 'no VM of that name'}",
  "if($v.Count -gt 1){Fail VmNameAmbiguous InvalidResult 'several VMs of that name'}",
  '$v[0]}',
].join('\n');

/** `Drives LIST`: hard disk drives (`Get-VMHardDiskDrive` objects) as plain records. */
const DRIVES =
  'function Drives($d){foreach($x in $d){[pscustomobject]@{Path=$x.Path;ControllerType=[string]$x.ControllerType;ControllerNumber=$x.ControllerNumber;ControllerLocation=$x.ControllerLocation}}}';

/** `VmOut VM`: what the driver reads of a VM (a `VirtualMachine` object of Get-VM), with its drives. */
const VM_OUT = [
  'function VmOut($v){[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State;Status=$v.Status',
  'OperationalStatus=@(foreach($s in $v.OperationalStatus){[string]$s})',
  'MemoryStartup=[string]$v.MemoryStartup;ProcessorCount=$v.ProcessorCount;Version=[string]$v.Version;Generation=$v.Generation',
  'Path=$v.Path;ConfigurationLocation=$v.ConfigurationLocation;SnapshotFileLocation=$v.SnapshotFileLocation',
  'AutomaticStartAction=[string]$v.AutomaticStartAction;HardDrives=@(Drives(Get-VMHardDiskDrive -VM $v))}}',
].join('\n');

/** `Vhd PATH`: the one `VirtualHardDisk` Get-VHD answers for the path, or `VhdAmbiguous`. */
const VHD = [
  'function Vhd($p){$h=@(Get-VHD -Path $p)',
  "if($h.Count -ne 1){Fail VhdAmbiguous InvalidResult 'Get-VHD did not answer with one disk'}",
  '$h[0]}',
].join('\n');

/** `VhdOut VHD`: a `VirtualHardDisk` object with its sizes as strings. */
const VHD_OUT = [
  'function VhdOut($h){[pscustomobject]@{Path=$h.Path;VhdFormat=[string]$h.VhdFormat;VhdType=[string]$h.VhdType',
  'FileSize=[string]$h.FileSize;Size=[string]$h.Size;MinimumSize=[string]$h.MinimumSize;ParentPath=$h.ParentPath',
  'DiskIdentifier=[string]$h.DiskIdentifier;Attached=$h.Attached;BlockSize=[string]$h.BlockSize',
  'LogicalSectorSize=[string]$h.LogicalSectorSize;PhysicalSectorSize=[string]$h.PhysicalSectorSize}}',
].join('\n');

/** `VmState VM`: name, id and state of the VM as Hyper-V sees it now (Get-VM -Id). */
const VM_STATE =
  'function VmState($v){$w=Get-VM -Id $v.Id;[pscustomobject]@{Name=$w.Name;Id=[string]$w.Id;State=[string]$w.State;Status=$w.Status}}';

// ---------------------------------------------------------------- VMs

/**
 * Every VM named `name` (zero, one, or several: Hyper-V does not make names unique), each as
 * `VmOut` writes it: Name, Id, State (a `VMState` name), Status, OperationalStatus (names),
 * MemoryStartup (bytes, string), ProcessorCount, Version (configuration version), Generation,
 * Path, ConfigurationLocation, SnapshotFileLocation, AutomaticStartAction and HardDrives (Path,
 * ControllerType, ControllerNumber, ControllerLocation). Parse with `parseVms`.
 */
export function getVm(name: string): string {
  return script({ n: name }, 'foreach($v in @(Get-VM|Where-Object{$_.Name -eq $n})){VmOut $v}', [
    DRIVES,
    VM_OUT,
  ]);
}

/** Every VM of the host, as {@link getVm} writes one. Parse with `parseVms`. */
export function listVms(): string {
  return script({}, 'foreach($v in @(Get-VM)){VmOut $v}', [DRIVES, VM_OUT]);
}

/** Name, Id, State and Status of every VM named `name`, without the drives: cheap, for polling. Parse with `parseVmStates`. */
export function vmState(name: string): string {
  return script(
    { n: name },
    'foreach($v in @(Get-VM|Where-Object{$_.Name -eq $n})){[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State;Status=$v.Status}}',
  );
}

/**
 * Save the VM's memory and device state (`Save-VM`); the VM then shows `Saved`. Does nothing to a
 * VM already `Saved`. Answers the state after (`parseVmStates`).
 */
export function saveVm(vm: string): string {
  return script(
    { n: vm },
    ['$v=Vm $n', "if([string]$v.State -ne 'Saved'){Save-VM -VM $v -Confirm:$false}", 'VmState $v'].join('\n'),
    [VM, VM_STATE],
  );
}

/**
 * Start a VM that is `Off` or `Saved` (`Start-VM`; from `Saved` it restores the saved state, as
 * documented for Start-VM). Any other state is left alone. Answers the state after.
 */
export function startVm(vm: string): string {
  return script(
    { n: vm },
    [
      '$v=Vm $n',
      "if(@('Off','Saved') -contains [string]$v.State){Start-VM -VM $v -Confirm:$false}",
      'VmState $v',
    ].join('\n'),
    [VM, VM_STATE],
  );
}

/**
 * Stop a VM that is not `Off`: with `turnOff`, `Stop-VM -TurnOff` (power cut, nothing saved);
 * else `Stop-VM -Force` (a guest shutdown through the integration services; documented: "If the
 * virtual machine has applications with unsaved data, the virtual machine has five minutes to
 * save data and shut down"). Answers the state after.
 */
export function stopVm(vm: string, turnOff: boolean): string {
  const how = turnOff ? '-TurnOff' : '-Force';
  return script(
    { n: vm },
    ['$v=Vm $n', `if([string]$v.State -ne 'Off'){Stop-VM -VM $v ${how} -Confirm:$false}`, 'VmState $v'].join(
      '\n',
    ),
    [VM, VM_STATE],
  );
}

/** Pause a `Running` VM (`Suspend-VM`); any other state is left alone. Answers the state after. */
export function suspendVm(vm: string): string {
  return script(
    { n: vm },
    ['$v=Vm $n', "if([string]$v.State -eq 'Running'){Suspend-VM -VM $v -Confirm:$false}", 'VmState $v'].join(
      '\n',
    ),
    [VM, VM_STATE],
  );
}

/** Resume a `Paused` VM (`Resume-VM`); any other state is left alone. Answers the state after. */
export function resumeVm(vm: string): string {
  return script(
    { n: vm },
    ['$v=Vm $n', "if([string]$v.State -eq 'Paused'){Resume-VM -VM $v -Confirm:$false}", 'VmState $v'].join(
      '\n',
    ),
    [VM, VM_STATE],
  );
}

/**
 * Unregister a VM that is `Off` or `Saved` (`Remove-VM -Force`: no prompt). Its virtual hard
 * disks stay (documented for Remove-VM); a saved state goes with the registration. A VM in any
 * other state is refused (`VmIsActive`): the guest may be running. Answers `{ Removed }`: false
 * when no VM of that name is there (idempotent). Parse with `parseRemoved`.
 */
export function removeVm(vm: string): string {
  return script(
    { n: vm },
    [
      '$v=@(Get-VM|Where-Object{$_.Name -eq $n})',
      "if($v.Count -gt 1){Fail VmNameAmbiguous InvalidResult 'several VMs of that name'}",
      "if($v.Count -eq 1 -and @('Off','Saved') -notcontains [string]$v[0].State){Fail VmIsActive InvalidOperation 'the VM is neither off nor saved'}",
      'if($v.Count -eq 1){Remove-VM -VM $v[0] -Force}',
      '[pscustomobject]@{Removed=($v.Count -eq 1)}',
    ].join('\n'),
  );
}

/**
 * What `Compare-VM -Path` finds incompatible about registering the VM whose configuration file
 * (`.vmcx`) is `vmcxPath` on this host: one record per incompatibility with Message, MessageId
 * and Source (the object at fault, as a string). With `vhdDestinationPath`, the comparison is for
 * a copy import (`-Copy -VhdDestinationPath`, the folder the disks would be copied to). Empty:
 * compatible. Parse with `parseIncompatibilities`.
 */
export function compareVm(vmcxPath: string, vhdDestinationPath?: string): string {
  const values: Record<string, string> = { p: vmcxPath };
  let cmd = 'Compare-VM -Path $p';
  if (vhdDestinationPath !== undefined) {
    values.d = vhdDestinationPath;
    cmd += ' -Copy -VhdDestinationPath $d';
  }
  return script(
    values,
    [
      `$r=${cmd}`,
      'foreach($i in $r.Incompatibilities){[pscustomobject]@{Message=$i.Message;MessageId=[string]$i.MessageId;Source=[string]$i.Source}}',
    ].join('\n'),
  );
}

/**
 * Register the VM of configuration file `vmcxPath` in place (`Import-VM -Path -Register`: its
 * files stay where they are, its id is kept). Answers the VM as {@link getVm} does. Not
 * idempotent by itself: Hyper-V refuses a second VM of the same id, so the driver looks first.
 */
export function importVm(vmcxPath: string): string {
  return script({ p: vmcxPath }, 'foreach($v in @(Import-VM -Path $p -Register -Confirm:$false)){VmOut $v}', [
    DRIVES,
    VM_OUT,
  ]);
}

/**
 * Move all of the VM's files (configuration, checkpoints, smart paging, virtual hard disks) under
 * `destinationPath` on this host, while it runs (`Move-VMStorage -DestinationStoragePath`).
 * Answers the VM after, as {@link getVm} does.
 */
export function moveVmStorage(vm: string, destinationPath: string): string {
  return script(
    { n: vm, d: destinationPath },
    [
      '$v=Vm $n',
      'Move-VMStorage -VM $v -DestinationStoragePath $d -Confirm:$false',
      'VmOut (Get-VM -Id $v.Id)',
    ].join('\n'),
    [VM, DRIVES, VM_OUT],
  );
}

/**
 * Live-migrate the VM with its storage to `destinationHost`, its files under
 * `destinationStoragePath` there (`Move-VM -DestinationHost -IncludeStorage
 * -DestinationStoragePath`). Needs live migration set up between the hosts (authentication,
 * networks), which this does not check. Answers `{ Name, Id, DestinationHost }`.
 */
export function moveVm(vm: string, destinationHost: string, destinationStoragePath: string): string {
  return script(
    { n: vm, h: destinationHost, d: destinationStoragePath },
    [
      '$v=Vm $n',
      'Move-VM -VM $v -DestinationHost $h -IncludeStorage -DestinationStoragePath $d -Confirm:$false',
      '[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;DestinationHost=$h}',
    ].join('\n'),
    [VM],
  );
}

// ---------------------------------------------------------------- checkpoints

/**
 * Take a checkpoint named `checkpointName` of the VM (`Checkpoint-VM -SnapshotName`), unless one
 * of that name exists (then nothing is taken). The VM's checkpoint type applies (Production by
 * default since Windows Server 2016: VSS in the guest, falling back to a standard checkpoint unless
 * the type is ProductionOnly; documented, not observed). Answers `{ VMName, Name, Id, Created,
 * HardDrives }`: the drives after, each now on its new differencing disk (`.avhdx`). Parse with
 * `parseCheckpointTaken`.
 */
export function checkpointVm(vm: string, checkpointName: string): string {
  return script(
    { n: vm, c: checkpointName },
    [
      '$v=Vm $n',
      '$s=@(Get-VMSnapshot -VM $v|Where-Object{$_.Name -eq $c});$made=$false',
      'if($s.Count -eq 0){Checkpoint-VM -VM $v -SnapshotName $c -Confirm:$false;$made=$true;$s=@(Get-VMSnapshot -VM $v|Where-Object{$_.Name -eq $c})}',
      "if($s.Count -ne 1){Fail CheckpointAmbiguous InvalidResult 'not exactly one checkpoint of that name'}",
      '[pscustomobject]@{VMName=$v.Name;Name=$s[0].Name;Id=[string]$s[0].Id;Created=$made;HardDrives=@(Drives(Get-VMHardDiskDrive -VM $v))}',
    ].join('\n'),
    [VM, DRIVES],
  );
}

/**
 * The VM's checkpoints (`Get-VMSnapshot`, alias Get-VMCheckpoint): Name, Id, SnapshotType,
 * ParentSnapshotName, CreationTime (ISO 8601 UTC) and the checkpoint's HardDrives
 * (`Get-VMHardDiskDrive -VMSnapshot`). Parse with `parseCheckpoints`.
 */
export function getCheckpoints(vm: string): string {
  return script(
    { n: vm },
    [
      '$v=Vm $n',
      "foreach($s in @(Get-VMSnapshot -VM $v)){[pscustomobject]@{Name=$s.Name;Id=[string]$s.Id;SnapshotType=[string]$s.SnapshotType;ParentSnapshotName=$s.ParentSnapshotName;CreationTime=$s.CreationTime.ToUniversalTime().ToString('o');HardDrives=@(Drives(Get-VMHardDiskDrive -VMSnapshot $s))}}",
    ].join('\n'),
    [VM, DRIVES],
  );
}

/**
 * Delete the VM's checkpoint named `checkpointName` (`Remove-VMSnapshot -VMSnapshot`, alias
 * Remove-VMCheckpoint). Its differencing disks are then merged into their parents by Hyper-V in
 * the background: the cmdlet returns before the merge ends; watch it with {@link mergeStatus}.
 * Answers `{ Removed }`: false when there is no checkpoint of that name (idempotent).
 */
export function removeCheckpoint(vm: string, checkpointName: string): string {
  return script(
    { n: vm, c: checkpointName },
    [
      '$v=Vm $n',
      '$s=@(Get-VMSnapshot -VM $v|Where-Object{$_.Name -eq $c})',
      "if($s.Count -gt 1){Fail CheckpointAmbiguous InvalidResult 'several checkpoints of that name'}",
      'if($s.Count -eq 1){Remove-VMSnapshot -VMSnapshot $s[0] -Confirm:$false}',
      '[pscustomobject]@{Removed=($s.Count -eq 1)}',
    ].join('\n'),
    [VM],
  );
}

/**
 * Whether a merge started by {@link removeCheckpoint} still runs: the VM as {@link getVm} writes
 * it, read with `parseMergeStatus`, which looks at two signs: `OperationalStatus`/`Status`
 * naming a merge (Hyper-V's "Merging disks" operational status; the exact name is from the
 * documentation of the WMI status, not observed), and a hard drive still on a `.avhdx`.
 */
export function mergeStatus(vm: string): string {
  return script({ n: vm }, 'VmOut (Vm $n)', [VM, DRIVES, VM_OUT]);
}

// ---------------------------------------------------------------- virtual hard disks

/**
 * The virtual hard disk at `path` (`Get-VHD -Path`): Path, VhdFormat, VhdType, FileSize, Size,
 * MinimumSize (bytes as strings; MinimumSize empty when Hyper-V does not know it), ParentPath
 * (empty unless differencing), DiskIdentifier, Attached, BlockSize, LogicalSectorSize,
 * PhysicalSectorSize. Parse with `parseVhd`.
 */
export function getVhd(path: string): string {
  return script({ p: path }, 'VhdOut (Vhd $p)', [VHD, VHD_OUT]);
}

/**
 * The disk at `path` and every disk below it, following ParentPath (top first), as
 * {@link getVhd} writes each; more than 64 images is an error (`VhdChainTooLong`: a loop or a
 * chain no VM should have). Parse with `parseVhdChain`.
 */
export function getVhdChain(path: string): string {
  return script(
    { p: path },
    [
      '$n=0',
      "while($p){$n++;if($n -gt 64){Fail VhdChainTooLong LimitsExceeded 'over 64 disks in the chain'};$h=Vhd $p;VhdOut $h;$p=$h.ParentPath}",
    ].join('\n'),
    [VHD, VHD_OUT],
  );
}

/**
 * Check the disk at `path` and its chain (`Test-VHD`): `{ Path, Valid, Problems }`, the
 * problems being the messages of the errors Test-VHD wrote (collected, not raised). Parse with
 * `parseVhdTest`.
 */
export function testVhd(path: string): string {
  return script(
    { p: path },
    [
      '$e=$null;$ok=Test-VHD -Path $p -ErrorAction SilentlyContinue -ErrorVariable e',
      '[pscustomobject]@{Path=$p;Valid=[bool]$ok;Problems=@(foreach($x in $e){$x.Exception.Message})}',
    ].join('\n'),
  );
}

/**
 * Merge the differencing disk `path` (and any between) into `destination`, a disk below it in
 * its chain (`Merge-VHD -Path -DestinationPath -Force`). Offline only: documented, "the virtual
 * hard disk chain must not be attached when merge is initiated"; the merged files are not
 * deleted but "are no longer valid virtual hard disk files after the operation". Answers the
 * destination as {@link getVhd} does.
 */
export function mergeVhd(path: string, destination: string): string {
  return script(
    { p: path, d: destination },
    ['Merge-VHD -Path $p -DestinationPath $d -Force -Confirm:$false', 'VhdOut (Vhd $d)'].join('\n'),
    [VHD, VHD_OUT],
  );
}

/**
 * Point the differencing disk `path` at `parentPath` (`Set-VHD -Path -ParentPath`), without
 * copying data. `leafPath` (the top of the chain) is required by Hyper-V when the chain is in
 * use (online mode). `ignoreIdMismatch` adds `-IgnoreIdMismatch`, which skips the check that the
 * new parent has the identifier the child recorded: documented as corrupting data when the new
 * parent is not identical to the old one, so only for a verified copy. Answers the disk as
 * {@link getVhd} does.
 */
export function setVhdParent(
  path: string,
  parentPath: string,
  opts: { leafPath?: string; ignoreIdMismatch?: boolean } = {},
): string {
  const values: Record<string, string> = { p: path, q: parentPath };
  let cmd = 'Set-VHD -Path $p -ParentPath $q';
  if (opts.leafPath !== undefined) {
    values.l = opts.leafPath;
    cmd += ' -LeafPath $l';
  }
  if (opts.ignoreIdMismatch) cmd += ' -IgnoreIdMismatch';
  return script(values, [`${cmd} -Confirm:$false`, 'VhdOut (Vhd $p)'].join('\n'), [VHD, VHD_OUT]);
}

/**
 * Create the differencing disk `path` over `parentPath` (`New-VHD -Path -ParentPath
 * -Differencing`); New-VHD fails when `path` exists. Answers the new disk as {@link getVhd} does.
 */
export function newDifferencingVhd(path: string, parentPath: string): string {
  return script({ p: path, q: parentPath }, 'VhdOut (New-VHD -Path $p -ParentPath $q -Differencing)', [
    VHD_OUT,
  ]);
}

// ---------------------------------------------------------------- files

/** SHA-256 of the file's contents (`Get-FileHash -LiteralPath -Algorithm SHA256`). Parse with `parseFileHash`. */
export function fileHash(path: string): string {
  return script(
    { p: path },
    [
      '$h=Get-FileHash -LiteralPath $p -Algorithm SHA256',
      '[pscustomobject]@{Path=$p;Algorithm=$h.Algorithm;Hash=$h.Hash}',
    ].join('\n'),
  );
}

/**
 * What is at `path`: `{ Exists: false }`, or Exists, IsDirectory, Length (bytes, string; empty
 * for a directory), Attributes (names, e.g. `Archive, ReparsePoint`), and the identity of the
 * file: VolumeId, the volume's `UniqueId` (`Get-Volume -FilePath`, a `\\?\Volume{GUID}\` path),
 * and FileIdText, the output of `fsutil file queryfileid PATH` (documented for NTFS and ReFS,
 * needs an administrator; its text is localized, the parser takes the one hex number in it).
 * Together they name the file as (volume, file id) do on Windows, the counterpart of
 * `dev:ino`. A path holding `"` is refused (`BadPath`) before fsutil sees it: Windows
 * PowerShell 5.1 does not escape quotes in the arguments of native programs, and no Windows
 * file name contains one. Parse with `parseFileInfo`.
 */
export function fileInfo(path: string): string {
  return script(
    { p: path },
    [
      'if(-not (Test-Path -LiteralPath $p)){[pscustomobject]@{Exists=$false};return}',
      "if($p.IndexOf([char]34) -ge 0){Fail BadPath InvalidArgument 'a path with a double quote'}",
      '$i=Get-Item -LiteralPath $p -Force',
      '$t=@(& fsutil.exe file queryfileid $p)',
      "if($LASTEXITCODE -ne 0){Fail FileIdUnavailable ReadError ('fsutil file queryfileid exited '+$LASTEXITCODE)}",
      '$w=Get-Volume -FilePath $p',
      '[pscustomobject]@{Exists=$true;IsDirectory=$i.PSIsContainer;Length=[string]$i.Length;Attributes=[string]$i.Attributes;VolumeId=$w.UniqueId;FileIdText=[string]::Join([char]10,$t)}',
    ].join('\n'),
  );
}

/** Delete the file at `path` if there is one (`Remove-Item -LiteralPath -Force`). Answers `{ Removed }`. */
export function removeFile(path: string): string {
  return script(
    { p: path },
    [
      '$e=Test-Path -LiteralPath $p -PathType Leaf',
      'if($e){Remove-Item -LiteralPath $p -Force -Confirm:$false}',
      '[pscustomobject]@{Removed=$e}',
    ].join('\n'),
  );
}

/** Create the directory `path` and its parents (`[IO.Directory]::CreateDirectory`; an existing one is fine). Answers `{ Path, Created }`. */
export function newDirectory(path: string): string {
  return script(
    { p: path },
    [
      '$e=[IO.Directory]::Exists($p)',
      '$null=[IO.Directory]::CreateDirectory($p)',
      '[pscustomobject]@{Path=$p;Created=(-not $e)}',
    ].join('\n'),
  );
}

/**
 * Remove the directory `path` when it exists and is empty (`[IO.Directory]::Delete(path, $false)`,
 * which itself refuses a directory with anything in it). Answers `{ Existed, Removed }`.
 */
export function removeDirIfEmpty(path: string): string {
  return script(
    { p: path },
    [
      '$e=[IO.Directory]::Exists($p);$r=$false',
      'if($e -and -not [IO.Directory]::EnumerateFileSystemEntries($p).GetEnumerator().MoveNext()){[IO.Directory]::Delete($p,$false);$r=$true}',
      '[pscustomobject]@{Existed=$e;Removed=$r}',
    ].join('\n'),
  );
}

/**
 * Size and free space of the volume holding `path` or, when it does not exist yet, its nearest
 * existing ancestor (`Get-Volume -FilePath`: mount points included). Answers Path (the one
 * asked about), UniqueId, DriveLetter, FileSystem, Size and SizeRemaining (bytes as strings).
 * Parse with `parseVolume`.
 */
export function volumeInfo(path: string): string {
  return script(
    { p: path },
    [
      "while(-not (Test-Path -LiteralPath $p)){$u=[IO.Path]::GetDirectoryName($p);if(-not $u){Fail PathNotFound ObjectNotFound 'no existing directory above the path'};$p=$u}",
      '$w=Get-Volume -FilePath $p',
      '[pscustomobject]@{Path=$p;UniqueId=$w.UniqueId;DriveLetter=[string]$w.DriveLetter;FileSystem=$w.FileSystem;Size=[string]$w.Size;SizeRemaining=[string]$w.SizeRemaining}',
    ].join('\n'),
  );
}

// ---------------------------------------------------------------- the host

/**
 * The host: ComputerName, OsVersion, its processors (`Win32_Processor` Manufacturer and Name,
 * one per socket) and the VM configuration versions it runs (`Get-VMHostSupportedVersion`:
 * Name, Version, IsDefault). Parse with `parseHostInfo`.
 */
export function hostInfo(): string {
  return script(
    {},
    [
      '[pscustomobject]@{ComputerName=$env:COMPUTERNAME;OsVersion=[string][Environment]::OSVersion.Version',
      'Processors=@(foreach($c in @(Get-CimInstance -ClassName Win32_Processor)){[pscustomobject]@{Manufacturer=$c.Manufacturer;Name=$c.Name}})',
      'SupportedVersions=@(foreach($s in @(Get-VMHostSupportedVersion)){[pscustomobject]@{Name=$s.Name;Version=[string]$s.Version;IsDefault=$s.IsDefault}})}',
    ].join('\n'),
  );
}

/** Hyper-V's default folders for new VMs' disks and configurations (`Get-VMHost`). Parse with `parseVmHostStorage`. */
export function vmHostStorage(): string {
  return script(
    {},
    [
      '$h=Get-VMHost',
      '[pscustomobject]@{ComputerName=$h.ComputerName;VirtualHardDiskPath=$h.VirtualHardDiskPath;VirtualMachinePath=$h.VirtualMachinePath}',
    ].join('\n'),
  );
}

// ---------------------------------------------------------------- the driver's own (HyperVDriver)

/**
 * Values of a list bound to `$<prefix>0`, `$<prefix>1`, ... and the code `@($p0,$p1,...)` that
 * names them (our identifiers only; the values themselves go through {@link psQuote}).
 */
function listOf(prefix: string, values: readonly string[]): { values: Record<string, string>; code: string } {
  const bound = Object.fromEntries(values.map((v, i) => [`${prefix}${i}`, v]));
  return { values: bound, code: `@(${values.map((_v, i) => `$${prefix}${i}`).join(',')})` };
}

/**
 * `Fid PATH`: the text `fsutil file queryfileid` prints for the file (its id, one `0x` number in
 * localized words); a path with `"` is refused (`BadPath`, see {@link fileInfo}).
 */
const FID = [
  "function Fid($p){if($p.IndexOf([char]34) -ge 0){Fail BadPath InvalidArgument 'a path with a double quote'}",
  '$t=@(& fsutil.exe file queryfileid $p)',
  "if($LASTEXITCODE -ne 0){Fail FileIdUnavailable ReadError ('fsutil file queryfileid exited '+$LASTEXITCODE)}",
  '[string]::Join([char]10,$t)}',
].join('\n');

/**
 * `Disk DRIVE`: a hard disk drive with what the driver needs of its file: VhdFormat, VhdType and
 * ParentPath from Get-VHD (or VhdError, the message, when Get-VHD cannot read it).
 */
const DISK = [
  'function Disk($x){$h=$null;$e=$null',
  "if($x.Path){try{$g=@(Get-VHD -Path $x.Path);if($g.Count -eq 1){$h=$g[0]}else{$e=[string]$g.Count+' answers'}}catch{$e=$_.Exception.Message}}",
  '[pscustomobject]@{Path=$x.Path;ControllerType=[string]$x.ControllerType;ControllerNumber=$x.ControllerNumber;ControllerLocation=$x.ControllerLocation',
  'VhdFormat=$(if($h){[string]$h.VhdFormat});VhdType=$(if($h){[string]$h.VhdType});ParentPath=$(if($h){$h.ParentPath});VhdError=$e}}',
].join('\n');

/**
 * Every VM named `name`, as {@link getVm} writes one, each hard drive with its file's
 * VhdFormat, VhdType and ParentPath (Get-VHD), or VhdError. Parse with `parseVmDisks`.
 */
export function vmDisks(name: string): string {
  return script(
    { n: name },
    'foreach($v in @(Get-VM|Where-Object{$_.Name -eq $n})){$o=VmOut $v;$o.HardDrives=@(foreach($x in @(Get-VMHardDiskDrive -VM $v)){Disk $x});$o}',
    [DRIVES, VM_OUT, DISK],
  );
}

/**
 * For each of `paths` (differencing disks a VM runs on): its file id (`FileIdText`, see
 * {@link fileInfo}) and every file beside it named like one of vmplace's layers
 * (`*.vmplace-*.avhdx`) with its file id: a layer vmplace asked for is a hard link to the
 * `.avhdx` Hyper-V made, the same file under the asked name. Parse with `parseLayerLinks`.
 */
export function layerLinks(paths: readonly string[]): string {
  const l = listOf('p', paths);
  return script(
    l.values,
    `foreach($p in ${l.code}){$d=[IO.Path]::GetDirectoryName($p);[pscustomobject]@{Path=$p;FileIdText=(Fid $p);Links=@(foreach($c in [IO.Directory]::GetFiles($d,'*.vmplace-*.avhdx')){[pscustomobject]@{Path=$c;FileIdText=(Fid $c)}})}}`,
    [FID],
  );
}

/**
 * Every VM of the host with every file it refers to: the files of its hard drives and of its
 * checkpoints' hard drives (`Get-VMSnapshot`), each followed down its parents (Get-VHD
 * ParentPath, at most 64; a file Get-VHD cannot read ends its chain). Parse with `parseVmFiles`.
 */
export function vmFiles(): string {
  return script(
    {},
    [
      'foreach($v in @(Get-VM)){$l=New-Object Collections.ArrayList',
      '$d=@(Get-VMHardDiskDrive -VM $v)+@(foreach($s in @(Get-VMSnapshot -VM $v)){Get-VMHardDiskDrive -VMSnapshot $s})',
      'foreach($x in $d){$p=$x.Path;$k=0;while($p -and $k -lt 64){$null=$l.Add($p);$k++;try{$p=(Get-VHD -Path $p).ParentPath}catch{$p=$null}}}',
      '[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State;Paths=@($l)}}',
    ].join('\n'),
  );
}

/**
 * For each of `paths`: whether something is there and its attributes (`[IO.File]::GetAttributes`,
 * which reads the name itself: a symbolic link or junction shows `ReparsePoint`, a dangling one
 * included). For the path guard. Parse with `parsePathAttributes`.
 */
export function pathAttributes(paths: readonly string[]): string {
  const l = listOf('p', paths);
  return script(
    l.values,
    `foreach($p in ${l.code}){$a=$null;try{$a=[string][IO.File]::GetAttributes($p)}catch [IO.FileNotFoundException],[IO.DirectoryNotFoundException]{};[pscustomobject]@{Path=$p;Exists=($null -ne $a);Attributes=$a}}`,
  );
}

/**
 * Create `path` as a new empty file (`[IO.File]::Open` with `CreateNew`: never a name that
 * exists, a dangling link included; `FileExists` then), and answer what {@link fileInfo} answers
 * for it (its identity). Parse with `parseFileInfo`.
 */
export function createNewFile(path: string): string {
  return script(
    { p: path },
    [
      'try{$s=[IO.File]::Open($p,[IO.FileMode]::CreateNew,[IO.FileAccess]::Write,[IO.FileShare]::None);$s.Dispose()}',
      "catch [IO.IOException]{if([IO.File]::Exists($p) -or [IO.Directory]::Exists($p)){Fail FileExists ResourceExists 'the name exists'};throw}",
      '$i=Get-Item -LiteralPath $p -Force;$w=Get-Volume -FilePath $p',
      '[pscustomobject]@{Exists=$true;IsDirectory=$false;Length=[string]$i.Length;Attributes=[string]$i.Attributes;VolumeId=$w.UniqueId;FileIdText=(Fid $p)}',
    ].join('\n'),
    [FID],
  );
}

/**
 * Remove the file `path` only when its identity (`<volume GUID>:<file id>`, as `parseFileInfo`
 * makes it) is `identity`, compared right before `Remove-Item`. Answers `{ Outcome }`: `Removed`,
 * `Absent` (nothing there) or `Other` (another file has the name: left alone). Parse with
 * `parseRemoveOwn`.
 */
export function removeIfIdentity(path: string, identity: string): string {
  return script(
    { p: path, i: identity },
    [
      "if(-not [IO.File]::Exists($p)){[pscustomobject]@{Outcome='Absent'};return}",
      "$f=[regex]::Match((Fid $p),'0x([0-9A-Fa-f]+)').Groups[1].Value.ToLower().TrimStart([char]48);if($f.Length -eq 0){$f='0'}",
      "$g=[regex]::Match([string](Get-Volume -FilePath $p).UniqueId,'\\{([0-9A-Fa-f-]{36})\\}').Groups[1].Value.ToLower()",
      "if(($g+':'+$f) -cne $i){[pscustomobject]@{Outcome='Other'};return}",
      "Remove-Item -LiteralPath $p -Force -Confirm:$false;[pscustomobject]@{Outcome='Removed'}",
    ].join('\n'),
    [FID],
  );
}

/**
 * Give the file `existing` the second name `link` (`fsutil hardlink create`: an NTFS or ReFS hard
 * link, same volume only), unless `link` exists; answers both file ids (`LinkIdText`,
 * `TargetIdText`) so the caller sees whether `link` is that file. Parse with `parseHardLink`.
 */
export function hardLink(link: string, existing: string): string {
  return script(
    { l: link, e: existing },
    [
      "if($l.IndexOf([char]34) -ge 0){Fail BadPath InvalidArgument 'a path with a double quote'}",
      '$made=$false',
      'if(-not [IO.File]::Exists($l)){$null=@(& fsutil.exe hardlink create $l $e)',
      "if($LASTEXITCODE -ne 0){Fail LinkFailed WriteError ('fsutil hardlink create exited '+$LASTEXITCODE)};$made=$true}",
      '[pscustomobject]@{Created=$made;LinkIdText=(Fid $l);TargetIdText=(Fid $e)}',
    ].join('\n'),
    [FID],
  );
}

/**
 * The VM's state and its configuration files as Hyper-V names them (configuration version 6.2 and
 * later, documented: `<ConfigurationLocation>\Virtual Machines\<VM id>.vmcx`, `.vmrs` the runtime
 * state that holds a saved VM's memory, `.vmgs` the guest state), those that exist, each with
 * its file id. Parse with `parseStateFiles`.
 */
export function stateFiles(vm: string): string {
  return script(
    { n: vm },
    [
      "$v=Vm $n;$d=[IO.Path]::Combine($v.ConfigurationLocation,'Virtual Machines')",
      "$f=@(foreach($x in @('vmrs','vmgs','vmcx')){$p=[IO.Path]::Combine($d,[string]$v.Id+'.'+$x);if([IO.File]::Exists($p)){[pscustomobject]@{Kind=$x;Path=$p;FileIdText=(Fid $p)}}})",
      '[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State;Files=$f}',
    ].join('\n'),
    [VM, FID],
  );
}

/**
 * Move one virtual hard disk of a running (or stopped) VM to `destination` on this host
 * (`Move-VMStorage -VHDs @(@{SourceFilePath; DestinationFilePath})`): Hyper-V mirrors it, switches
 * the VM to it and deletes the source. Answers the VM after, as {@link getVm} does.
 */
export function moveVmVhd(vm: string, source: string, destination: string): string {
  return script(
    { n: vm, s: source, d: destination },
    [
      '$v=Vm $n',
      'Move-VMStorage -VM $v -VHDs @(@{SourceFilePath=$s;DestinationFilePath=$d}) -Confirm:$false',
      'VmOut (Get-VM -Id $v.Id)',
    ].join('\n'),
    [VM, DRIVES, VM_OUT],
  );
}

/**
 * Point the VM's hard disk drive at controller `controllerType` `number`:`location` to the file
 * `path` (`Set-VMHardDiskDrive -VMHardDiskDrive -Path`). Hyper-V allows it for a VM that is off.
 * Answers the state after (`parseVmStates`).
 */
export function setDrivePath(
  vm: string,
  controllerType: string,
  number: number,
  location: number,
  path: string,
): string {
  return script(
    { n: vm, t: controllerType, c: String(number), l: String(location), p: path },
    [
      '$v=Vm $n',
      '$x=@(Get-VMHardDiskDrive -VM $v -ControllerType $t -ControllerNumber ([int]$c) -ControllerLocation ([int]$l))',
      "if($x.Count -ne 1){Fail DriveNotFound ObjectNotFound 'no hard disk drive at that place'}",
      'Set-VMHardDiskDrive -VMHardDiskDrive $x[0] -Path $p -Confirm:$false',
      'VmState $v',
    ].join('\n'),
    [VM, VM_STATE],
  );
}

/** `Set-VM -AutomaticStartAction` (`Nothing`, `StartIfRunning`, `Start`). Answers the state after. */
export function setStartAction(vm: string, action: 'Nothing' | 'StartIfRunning' | 'Start'): string {
  return script(
    { n: vm },
    ['$v=Vm $n', `Set-VM -VM $v -AutomaticStartAction ${action} -Confirm:$false`, 'VmState $v'].join('\n'),
    [VM, VM_STATE],
  );
}

/** The VM's state and `Uptime` in ticks (100 ns) as a string. Parse with `parseUptime`. */
export function vmUptime(vm: string): string {
  return script(
    { n: vm },
    '$v=Vm $n;[pscustomobject]@{Name=$v.Name;State=[string]$v.State;UptimeTicks=[string]$v.Uptime.Ticks}',
    [VM],
  );
}

/**
 * The first 8 bytes of the file and the first 8 of its last 512 (`Tail`: where a VHD keeps its
 * footer; absent for a file under 1 KiB), as hex pairs (`[BitConverter]::ToString`), read with every
 * sharing mode allowed (a disk Hyper-V holds open may still refuse: then `Denied`, and VhdFormat
 * from Get-VHD, which reads the header through Hyper-V). Parse with `parseFileHeader`.
 */
export function fileHeader(path: string): string {
  return script(
    { p: path },
    [
      '$x=$null;$y=$null;$f=$null',
      '$m=[IO.FileShare]::ReadWrite -bor [IO.FileShare]::Delete',
      'try{$s=[IO.File]::Open($p,[IO.FileMode]::Open,[IO.FileAccess]::Read,$m)',
      'try{$b=New-Object byte[] 8;$k=$s.Read($b,0,8);$x=[BitConverter]::ToString($b,0,$k)',
      'if($s.Length -ge 1024){$null=$s.Seek(-512,[IO.SeekOrigin]::End);$k=$s.Read($b,0,8);$y=[BitConverter]::ToString($b,0,$k)}}finally{$s.Dispose()}}',
      'catch [IO.IOException],[UnauthorizedAccessException]{if(-not [IO.File]::Exists($p)){throw};try{$f=[string](Get-VHD -Path $p).VhdFormat}catch{}}',
      '[pscustomobject]@{Path=$p;Hex=$x;Tail=$y;Denied=($null -eq $x);VhdFormat=$f}',
    ].join('\n'),
  );
}

/**
 * Whether this host reaches `host`:`port` over TCP within 5 s (the target's sshd, for copies).
 * Answers `{ Reachable }`. Parse with `parseReachable`.
 */
export function tcpReachable(host: string, port: number): string {
  return script(
    { h: host, t: String(port) },
    [
      '$c=New-Object Net.Sockets.TcpClient',
      'try{$ok=$c.ConnectAsync($h,[int]$t).Wait(5000)}catch{$ok=$false}finally{$c.Dispose()}',
      '[pscustomobject]@{Reachable=[bool]$ok}',
    ].join('\n'),
  );
}

// ---------------------------------------------------------------- copies (drivers/hyperv/transport.ts)

/**
 * Copy the file `source` of this host to `remotePath` on `host` with Windows' OpenSSH client,
 * `scp.exe -s` (the SFTP protocol: the remote path travels inside the protocol, never through the
 * target's shell, cmd.exe, which would read `&`, `^` or `%` in it), as `user` (empty: the name of
 * the account it runs as), port `port`, with
 * this account's own key and known_hosts (`~\.ssh` of the account vmplace logs in as: no key or
 * host key of the management box reaches the host), `BatchMode=yes` (no prompt), host key checked
 * (`StrictHostKeyChecking=yes`: an unknown or changed key fails the copy), no agent, no
 * forwarding. `limitKbit`: `-l` (Kbit/s). The source is named relative to its directory
 * (`.\name`), so that scp cannot take `D:` for a host. scp's output is collected and reported
 * when it fails (`ScpFailed`). Answers `{ Copied }`. Parse with `parseCopied`.
 */
export function scpToHost(
  source: string,
  user: string,
  host: string,
  port: number,
  remotePath: string,
  opts: { limitKbit?: number } = {},
): string {
  const values: Record<string, string> = { s: source, u: user, h: host, t: String(port), r: remotePath };
  let extra = '';
  if (opts.limitKbit !== undefined) {
    values.k = String(Math.max(1, Math.floor(opts.limitKbit)));
    extra = ",'-l',$k";
  }
  return script(
    values,
    [
      "if($h.IndexOf([char]58) -ge 0){$h='['+$h+']'}",
      "$a=@('-s','-B','-q','-o','BatchMode=yes','-o','StrictHostKeyChecking=yes','-o','ForwardAgent=no','-o','IdentityAgent=none','-o','ClearAllForwardings=yes','-o','ConnectTimeout=10','-P',$t" +
        extra +
        ')',
      'Set-Location -LiteralPath ([IO.Path]::GetDirectoryName($s))',
      "$t2=$h+':'+$r;if($u.Length -gt 0){$t2=$u+'@'+$t2}",
      "$o=@(&{$ErrorActionPreference='Continue';& scp.exe @a -- ('.\\'+[IO.Path]::GetFileName($s)) $t2 2>&1|ForEach-Object{[string]$_}})",
      "if($LASTEXITCODE -ne 0){Fail ScpFailed WriteError ('scp.exe exited '+$LASTEXITCODE+': '+[string]::Join([char]32,$o))}",
      '[pscustomobject]@{Copied=$true}',
    ].join('\n'),
  );
}

/**
 * Finish a copy on the host that received it: flush the part file `part` to disk
 * (`FileStream.Flush($true)`: FlushFileBuffers), SHA-256 it (`Get-FileHash`), and only when it is
 * `sha256` give it its final name `destination` (`[IO.File]::Move`, which never replaces a file:
 * the name taken fails the move; the part keeps its file id, so a claimed identity holds). One
 * round trip. Answers `{ Hash, Moved }`; a part whose hash differs stays as it is. Parse with
 * `parseFinishCopy`.
 */
export function finishCopy(part: string, destination: string, sha256: string): string {
  return script(
    { p: part, d: destination, x: sha256 },
    [
      '$s=[IO.File]::Open($p,[IO.FileMode]::Open,[IO.FileAccess]::ReadWrite,[IO.FileShare]::Read);try{$s.Flush($true)}finally{$s.Dispose()}',
      '$h=(Get-FileHash -LiteralPath $p -Algorithm SHA256).Hash.ToLower()',
      'if($h -cne $x){[pscustomobject]@{Hash=$h;Moved=$false};return}',
      '[IO.File]::Move($p,$d)',
      '[pscustomobject]@{Hash=$h;Moved=$true}',
    ].join('\n'),
  );
}

/**
 * Copy `source` into `part` on this host through .NET streams: the part is opened as it is (or
 * created) and truncated first, so a part created exclusively before keeps its file id; flushed
 * to disk after. Answers `{ Length }` (bytes, string). Parse with `parseCopiedLength`.
 */
export function copyIntoPart(source: string, part: string): string {
  return script(
    { s: source, d: part },
    [
      '$i=[IO.File]::Open($s,[IO.FileMode]::Open,[IO.FileAccess]::Read,[IO.FileShare]::ReadWrite)',
      'try{$o=[IO.File]::Open($d,[IO.FileMode]::OpenOrCreate,[IO.FileAccess]::Write,[IO.FileShare]::None)',
      'try{$o.SetLength(0);$i.CopyTo($o,8388608);$o.Flush($true);$n=$o.Length}finally{$o.Dispose()}}finally{$i.Dispose()}',
      '[pscustomobject]@{Length=[string]$n}',
    ].join('\n'),
  );
}
