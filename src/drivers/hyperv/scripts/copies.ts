/** Scripts of copies between hosts and on one host (drivers/hyperv/transport.ts). */
import { script } from './prelude';

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
