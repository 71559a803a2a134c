/**
 * Scripts that move a VM or its storage: Compare-VM and Import-VM for registering a VM's
 * configuration, Move-VMStorage (all files, or one disk) and Move-VM (live migration).
 */
import { DRIVES, script, VM, VM_OUT } from './prelude';

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
