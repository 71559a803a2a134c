/**
 * Scripts of files and folders on the host: hash, identity (volume and file id), attributes,
 * first bytes; create, link and remove (a file only when it is the one we made); the volume's
 * free space.
 */
import { FID, listOf, script } from './prelude';

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
