/**
 * Scripts of a VM's life on its host: save, start, stop, pause, resume, unregister; point a drive
 * at another file, set the automatic start action; its uptime and its configuration files.
 */
import { FID, listOf, script, VM, VM_STATE } from './prelude';

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

/**
 * The names of the files in folder `dir` that begin with `prefix` (compared without regard to
 * case), none when the folder is not there: the files a saved state's name stands for (see
 * `stateSidecarsIn`). One round trip. Answers `{ Names }`. Parse with `parseFileNames`.
 */
export function filesNamed(dir: string, prefix: string): string {
  return script(
    { d: dir, s: prefix },
    [
      '$r=@()',
      'if([IO.Directory]::Exists($d)){$r=@(foreach($f in [IO.Directory]::GetFiles($d)){$x=[IO.Path]::GetFileName($f);if($x.StartsWith($s,[StringComparison]::OrdinalIgnoreCase)){$x}})}',
      '[pscustomobject]@{Names=$r}',
    ].join('\n'),
  );
}

/**
 * Copy the configuration of a saved VM beside its saved state, for Import-VM on another host:
 * the VM's `<ConfigurationLocation>\Virtual Machines\<VM id>.vmcx` to `config` (when given: the
 * checkpoints may come in several scripts, each within the command line's limit), and for each
 * checkpoint `checkpoints[i]` (an id the caller read with getCheckpoints and checked is
 * vmplace's) its `<SnapshotFileLocation>\Snapshots\<id>.vmcx`, `.vmrs` and `.vmgs` (those that
 * exist) to `stems[i]` + the same extension. Each copy goes to `<name>.vmplace-part` first, is
 * flushed, and replaces an older copy of that name (the names are vmplace's own, per migration).
 * Only while the VM is `Saved` (its configuration does not change then): else `NotSaved`.
 * Answers the files copied `{ From, To }`. Parse with `parseConfigCopies`.
 */
export function copyConfiguration(
  vm: string,
  config: string | undefined,
  checkpoints: readonly { id: string; stem: string }[],
): string {
  const ids = listOf(
    'k',
    checkpoints.map((c) => c.id),
  );
  const stems = listOf(
    't',
    checkpoints.map((c) => c.stem),
  );
  return script(
    { n: vm, ...(config !== undefined ? { c: config } : {}), ...ids.values, ...stems.values },
    [
      "$v=Vm $n;if([string]$v.State -ne 'Saved'){Fail NotSaved InvalidOperation ('the VM is '+[string]$v.State)}",
      "function Put($f,$t){$p=$t+'.vmplace-part';[IO.File]::Copy($f,$p,$true)",
      '$s=[IO.File]::Open($p,[IO.FileMode]::Open,[IO.FileAccess]::ReadWrite,[IO.FileShare]::Read);try{$s.Flush($true)}finally{$s.Dispose()}',
      'if([IO.File]::Exists($t)){[IO.File]::Delete($t)};[IO.File]::Move($p,$t);[pscustomobject]@{From=$f;To=$t}}',
      config !== undefined
        ? "$o=@(Put ([IO.Path]::Combine($v.ConfigurationLocation,'Virtual Machines',[string]$v.Id+'.vmcx')) $c)"
        : '$o=@()',
      `$ks=${ids.code};$ts=${stems.code}`,
      "$sd=[IO.Path]::Combine($v.SnapshotFileLocation,'Snapshots')",
      "for($i=0;$i -lt $ks.Count;$i++){foreach($x in @('vmcx','vmrs','vmgs')){$f=[IO.Path]::Combine($sd,$ks[$i]+'.'+$x);if([IO.File]::Exists($f)){$o+=Put $f ($ts[$i]+'.'+$x)}}}",
      '$o',
    ].join('\n'),
    [VM],
  );
}

/** One hard disk drive a saved VM is registered with on its new host: its place and its file there. */
export interface ImportDrive {
  controllerType: string;
  controllerNumber: number;
  controllerLocation: number;
  path: string;
}

/**
 * Give each verified copy `links[i][0]` the second name `links[i][1]` (`fsutil hardlink create`:
 * same volume), creating the folders of the names; a name already there is kept only when it is
 * that copy (a re-run: the same file id), else `FileExists` and nothing more is linked (a file
 * someone else put there is never registered as the VM's configuration). Lays a copied configuration out as Hyper-V
 * keeps one (`Virtual Machines\<VM id>.vmcx|vmrs|vmgs`, `Snapshots\<checkpoint id>.*`) for
 * {@link importSavedVm}. Answers `{ Linked }` (how many were made). Parse with `parseLinked`.
 */
export function hardLinks(links: readonly [string, string][]): string {
  const from = listOf(
    'f',
    links.map((l) => l[0]),
  );
  const to = listOf(
    'l',
    links.map((l) => l[1]),
  );
  return script(
    { ...from.values, ...to.values },
    [
      `$fs=${from.code};$ls=${to.code};$n=0`,
      'for($i=0;$i -lt $ls.Count;$i++){$l=$ls[$i];$e=$fs[$i]',
      "if($l.IndexOf([char]34) -ge 0 -or $e.IndexOf([char]34) -ge 0){Fail BadPath InvalidArgument 'a path with a double quote'}",
      '$null=[IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName($l))',
      "if([IO.File]::Exists($l)){if((Fid $l) -cne (Fid $e)){Fail FileExists ResourceExists 'the name is another file'};continue}",
      "$null=@(& fsutil.exe hardlink create $l $e);if($LASTEXITCODE -ne 0){Fail LinkFailed WriteError ('fsutil hardlink create exited '+$LASTEXITCODE)};$n++}",
      '[pscustomobject]@{Linked=$n}',
    ].join('\n'),
    [FID],
  );
}

/**
 * Register a saved VM whose configuration was copied to this host and laid out by
 * {@link hardLinks} (Quick Storage Migration across hosts):
 * 1. `Compare-VM -Path <config> -Register`: the compatibility report of registering it in place;
 * 2. every hard disk drive of the report's VM at a place of `drives` pointed at its file here
 *    (`Set-VMHardDiskDrive` on the report's drive: the copies, not the source host's paths);
 * 3. the incompatibilities left that are not about those drives (a virtual switch missing, a
 *    processor, memory): when there is any, nothing is registered and they are answered;
 * 4. `Import-VM -CompatibilityReport`: registered, its id kept, `Saved`.
 * Answers `{ Imported, Incompatibilities, Vm }` (`Vm`: Name, Id, State). Parse with
 * `parseImported`. Not idempotent by itself once registered (Hyper-V refuses a second VM of one
 * id): the driver looks first.
 */
export function importSavedVm(opts: { config: string; drives: readonly ImportDrive[] }): string {
  const paths = listOf(
    'p',
    opts.drives.map((d) => d.path),
  );
  const types = listOf(
    'y',
    opts.drives.map((d) => d.controllerType),
  );
  // controller numbers and locations are the driver's integers, written as numbers
  const places = opts.drives.map((d, i) => {
    if (!Number.isSafeInteger(d.controllerNumber) || !Number.isSafeInteger(d.controllerLocation))
      throw new TypeError('importSavedVm: controller number and location are integers');
    return `@{T=$y${i};N=${d.controllerNumber};L=${d.controllerLocation};P=$p${i}}`;
  });
  return script(
    { c: opts.config, ...paths.values, ...types.values },
    [
      `$want=@(${places.join(',')})`,
      '$r=Compare-VM -Path $c -Register',
      'function Place($x){foreach($w in $want){if([string]$x.ControllerType -eq $w.T -and $x.ControllerNumber -eq $w.N -and $x.ControllerLocation -eq $w.L){return $w}};$null}',
      'foreach($x in @(Get-VMHardDiskDrive -VM $r.VM)){$w=Place $x;if($w -and $x.Path -ne $w.P){Set-VMHardDiskDrive -VMHardDiskDrive $x -Path $w.P}}',
      '$left=@(foreach($i in @($r.Incompatibilities)){$s=$i.Source',
      'if($s -is [Microsoft.HyperV.PowerShell.HardDiskDrive] -and (Place $s)){continue}',
      '[pscustomobject]@{Message=$i.Message;MessageId=[string]$i.MessageId;Source=[string]$s}})',
      'if($left.Count -gt 0){[pscustomobject]@{Imported=$false;Incompatibilities=$left;Vm=$null};return}',
      '$v=Import-VM -CompatibilityReport $r',
      '[pscustomobject]@{Imported=$true;Incompatibilities=@();Vm=[pscustomobject]@{Name=$v.Name;Id=[string]$v.Id;State=[string]$v.State}}',
    ].join('\n'),
  );
}
