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
export * from './scripts/observe';
export * from './scripts/lifecycle';
export * from './scripts/migrate';
export * from './scripts/checkpoints';
export * from './scripts/vhd';
export * from './scripts/files';
export * from './scripts/copies';
