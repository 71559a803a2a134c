/**
 * Readers of what the scripts of scripts.ts answer: the envelope's `result` array (see
 * `PowerShellRunner.run`) into typed values. Pure; anything not shaped as the script writes it is
 * a `ParseError` (reason `UnexpectedOutput`), never a guess. Tested against the recorded outputs in
 * test/fixtures/hyperv/, which follow the documented cmdlet objects (see the README there).
 *
 * Conventions of the scripts that the parsers hold them to: enums arrive as their names (a
 * number means a script forgot `[string]`), 64-bit sizes as decimal strings (a JavaScript number
 * holds integers exactly only up to 2^53; {@link sizeOf} refuses more, {@link bigSizeOf} reads
 * any), an absent optional value as `null` or `""`.
 */
export { bigSizeOf, sizeOf } from './parsers/common';
export type { HvHardDrive } from './parsers/common';
export * from './parsers/observe';
export * from './parsers/lifecycle';
export * from './parsers/migrate';
export * from './parsers/checkpoints';
export * from './parsers/vhd';
export * from './parsers/files';
export * from './parsers/copies';
