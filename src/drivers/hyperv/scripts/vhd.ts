/** Scripts of virtual hard disks (the VHD cmdlets): read, follow a chain, test, merge, re-parent, create. */
import { script, VHD, VHD_OUT } from './prelude';

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
