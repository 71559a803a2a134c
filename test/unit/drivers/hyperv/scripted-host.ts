/**
 * A stand-in Hyper-V host for the driver and transport tests: a `RawCommandRunner` that decodes
 * each PowerShell command line the driver sends, tells which script of scripts.ts it is (by the
 * script's own code, never by a value), reads the values bound to its variables, and answers
 * with an envelope shaped as the script would print it (the recorded fixtures where there is
 * one). Every script sent is kept, for the grammar checks.
 */
import { CommandError } from '../../../../src/errors';
import type { RunOptions, RunResult } from '../../../../src/exec/exec';
import { decodeCommand, POWERSHELL_ARGV_PREFIX } from '../../../../src/drivers/hyperv/powershell';
import type { RawCommandRunner } from '../../../../src/drivers/hyperv/runner';
import { envelopeLine, fixture } from './fake-raw';
import { scanVerbatim } from './ps-grammar';

/** Which script of scripts.ts a script is, by code only it has (most specific first). */
const SIGNATURES: [string, string][] = [
  ['Import-VM -CompatibilityReport', 'importSavedVm'],
  ['Fail NotSaved', 'copyConfiguration'],
  ['GetFiles($d)', 'filesNamed'],
  ['Linked=$n', 'hardLinks'],
  ['scp.exe', 'scpToHost'],
  ['$s.Flush($true)}finally{$s.Dispose()}', 'finishCopy'],
  ['$i.CopyTo($o,', 'copyIntoPart'],
  ['Net.Sockets.TcpClient', 'tcpReachable'],
  ['BitConverter', 'fileHeader'],
  ['Uptime.Ticks', 'vmUptime'],
  ['-AutomaticStartAction', 'setStartAction'],
  ['Set-VMHardDiskDrive', 'setDrivePath'],
  ['Move-VMStorage -VM $v -VHDs', 'moveVmVhd'],
  ["'Virtual Machines'", 'stateFiles'],
  ['hardlink create', 'hardLink'],
  ["Outcome='Absent'", 'removeIfIdentity'],
  ['FileMode]::CreateNew', 'createNewFile'],
  ['GetAttributes($p)', 'pathAttributes'],
  ['Collections.ArrayList', 'vmFiles'],
  ["'*.vmplace-*.avhdx'", 'layerLinks'],
  ['function Disk(', 'vmDisks'],
  ['Checkpoint-VM', 'checkpointVm'],
  ['Remove-VMSnapshot', 'removeCheckpoint'],
  ['CreationTime.ToUniversalTime', 'getCheckpoints'],
  ['VmOut (Vm $n)', 'mergeStatus'],
  ['VhdChainTooLong', 'getVhdChain'],
  ['Test-VHD', 'testVhd'],
  ['Merge-VHD', 'mergeVhd'],
  ['Set-VHD', 'setVhdParent'],
  ['New-VHD', 'newDifferencingVhd'],
  ['Get-FileHash', 'fileHash'],
  ['queryfileid $p)', 'fileInfo'],
  ['-PathType Leaf', 'removeFile'],
  ['CreateDirectory($p)', 'newDirectory'],
  ['Directory]::Delete', 'removeDirIfEmpty'],
  ['SizeRemaining', 'volumeInfo'],
  ['Get-VMHostSupportedVersion', 'hostInfo'],
  ['VirtualHardDiskPath', 'vmHostStorage'],
  ['Save-VM', 'saveVm'],
  ['Start-VM', 'startVm'],
  ['Stop-VM', 'stopVm'],
  ['Suspend-VM', 'suspendVm'],
  ['Resume-VM', 'resumeVm'],
  ['Remove-VM', 'removeVm'],
  ['Move-VM -VM', 'moveVm'],
  ['Import-VM', 'importVm'],
  ['Compare-VM', 'compareVm'],
  ['VhdOut (Vhd $p)', 'getVhd'],
  ['foreach($v in @(Get-VM)){VmOut $v}', 'listVms'],
  ['Where-Object{$_.Name -eq $n})){VmOut $v}', 'getVm'],
  ['Where-Object{$_.Name -eq $n})){[pscustomobject]', 'vmState'],
];

export function kindOf(script: string): string {
  for (const [sig, kind] of SIGNATURES) if (script.includes(sig)) return kind;
  throw new Error(`unknown script:\n${script}`);
}

/** The value bound to `$name` on the script's first lines (`$name='...'`), read as PowerShell reads it. */
export function valueOf(script: string, name: string): string {
  const at = script.indexOf(`\n$${name}=`);
  if (at < 0) throw new Error(`no $${name} in the script`);
  return scanVerbatim(script.slice(at + name.length + 3)).value;
}

/** Every value bound on the script's first lines, by variable name (`$p0`, `$p1`... in order). */
export function valuesOf(script: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of script.matchAll(/\n\$([a-z][A-Za-z0-9]*)='/g)) {
    const name = m[1]!;
    if (name in out) continue;
    out[name] = scanVerbatim(script.slice(m.index + name.length + 3)).value;
  }
  return out;
}

export type Envelope = Record<string, unknown>;
/** What a handler answers: an envelope, a list of results (an ok envelope), or an error the transport throws. */
export type Answer = Envelope | unknown[] | Error;
export type Handler = (script: string, call: Sent) => Answer;

export interface Sent {
  kind: string;
  script: string;
  values: Record<string, string>;
  opts: RunOptions | undefined;
}

export const ok = (...result: unknown[]): Envelope => ({ ok: true, result });
export const fail = (
  id: string,
  category: string,
  message = id,
  type = 'Microsoft.PowerShell.Commands.WriteErrorException',
): Envelope => ({
  ok: false,
  error: { type, message, category, id },
});
/** A fixture's `result`, for building answers on recorded shapes. */
export const fixtureResult = (name: string): Record<string, unknown>[] =>
  fixture(name).result as Record<string, unknown>[];

/** The scripted host: `on[kind]` answers; anything unanswered fails the test loudly. */
export class ScriptedHost implements RawCommandRunner {
  readonly sent: Sent[] = [];
  readonly on: Record<string, Handler> = {};
  constructor(readonly label = 'vmplace@hv1') {}

  answer(kind: string, a: Answer | Handler): this {
    this.on[kind] = typeof a === 'function' ? a : () => a;
    return this;
  }

  kinds(): string[] {
    return this.sent.map((s) => s.kind);
  }

  async runRaw(line: string, opts?: RunOptions): Promise<RunResult> {
    const tokens = line.split(' ');
    if (tokens.slice(0, -1).join(' ') !== POWERSHELL_ARGV_PREFIX.join(' '))
      throw new Error(`not a PowerShell command line: ${line.slice(0, 80)}`);
    const script = decodeCommand(tokens[tokens.length - 1]!);
    const kind = kindOf(script);
    const call: Sent = { kind, script, values: valuesOf(script), opts };
    this.sent.push(call);
    const h = this.on[kind];
    if (!h) throw new Error(`the scripted host has no answer for ${kind}`);
    const a = h(script, call);
    if (a instanceof Error) throw a;
    const envelope = Array.isArray(a) ? { ok: true, result: a } : a;
    return { stdout: `${envelopeLine(envelope)}\r\n`, stderr: '', exitCode: envelope.ok === true ? 0 : 1 };
  }
}

/** What ssh fails with when it cannot connect (exit 255), as SshExec.runRaw reports it. */
export function sshRefused(label = 'vmplace@hv1'): CommandError {
  return new CommandError(
    'CommandFailed',
    [`ssh:${label}`, 'powershell.exe', '-NoProfile'],
    255,
    'ssh: connect to host hv1 port 22: Connection refused',
  );
}
