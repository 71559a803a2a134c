/**
 * Scripts that read the host and its VMs and change nothing: the VMs (with their drives, their
 * disks' formats and parents, every file they refer to), their states, and the host itself.
 */
import { DRIVES, script, VM_OUT } from './prelude';

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
