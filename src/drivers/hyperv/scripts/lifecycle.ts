/**
 * Scripts of a VM's life on its host: save, start, stop, pause, resume, unregister; point a drive
 * at another file, set the automatic start action; its uptime and its configuration files.
 */
import { FID, script, VM, VM_STATE } from './prelude';

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
