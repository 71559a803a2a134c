/**
 * Scripts of checkpoints: take, list and delete them, watch the merge a deletion starts, and find
 * the layer-named hard links beside the differencing disks a VM runs on.
 */
import { DRIVES, FID, listOf, script, VM, VM_OUT } from './prelude';

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
