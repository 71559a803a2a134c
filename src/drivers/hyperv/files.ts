/**
 * Files and ownership (copies are the transports', see transport.ts): checksums, removal and
 * directories, all inside the declared storage (every written or deleted path passes the
 * context's `guardPath`), and the `<volume GUID>:<file id>` identities that prove a file is
 * vmplace's own. Functions of the Hyper-V driver (see `driver.ts`), each taking the host's
 * {@link HyperVContext}.
 */
import { VmplaceError } from '../../errors';
import { stateSidecarFiles } from './carry';
import { stateSidecars } from './names';
import * as parse from './parsers';
import * as scripts from './scripts';
import type { HyperVContext } from './context';

/** `Get-FileHash -Algorithm SHA256` (fileHash), lower-case hex. */
export async function checksum(ctx: HyperVContext, path: string): Promise<string> {
  return ctx.run('checksum', scripts.fileHash(path), parse.parseFileHash, { timeoutMs: null });
}

/**
 * `Remove-Item -LiteralPath -Force` of the file (a missing one is fine), and of a saved state's
 * sidecars with it (the fixed ones, and the checkpoint configuration copies there now).
 */
export async function removeFile(ctx: HyperVContext, path: string): Promise<void> {
  const fixed = stateSidecars(path);
  const listed = fixed.length ? (await stateSidecarFiles(ctx, path)).map((f) => f.path) : [];
  const all = [path, ...new Set([...listed, ...fixed])];
  await Promise.all(all.map((p) => ctx.guardPath(p)));
  for (const p of all) await ctx.run('removeFile', scripts.removeFile(p), parse.parseRemoved);
}

/** `[IO.Directory]::CreateDirectory` (newDirectory); a storage location itself is allowed. */
export async function makeDir(ctx: HyperVContext, path: string): Promise<void> {
  await ctx.guardPath(path, { allowRoot: true });
  await ctx.run('makeDir', scripts.newDirectory(path), parse.parseNewDirectory);
}

/** `[IO.Directory]::Delete(path, $false)` when empty (removeDirIfEmpty). */
export async function removeDirIfEmpty(ctx: HyperVContext, path: string): Promise<void> {
  await ctx.guardPath(path);
  await ctx.run('removeDirIfEmpty', scripts.removeDirIfEmpty(path), parse.parseRemoveDir);
}

/** `<volume GUID>:<file id>` (fileInfo: Get-Volume and `fsutil file queryfileid`); undefined when nothing is there. */
export async function fileIdentity(ctx: HyperVContext, path: string): Promise<string | undefined> {
  await ctx.guardPath(path);
  const i = await ctx.fileInfo(path);
  return i.exists ? i.identity : undefined;
}

/** `[IO.File]::Open(CreateNew)` (createNewFile): never a name that exists (`FileExists`); its identity. */
export async function createExclusive(ctx: HyperVContext, path: string): Promise<string> {
  await ctx.guardPath(path);
  const i = await ctx.run('createExclusive', scripts.createNewFile(path), parse.parseFileInfo);
  if (!i.exists) throw new VmplaceError('UnexpectedOutput', `${path} is not there after it was created`);
  return i.identity;
}

/** Identity compared and file removed in one script (removeIfIdentity). */
export async function removeIfIdentity(
  ctx: HyperVContext,
  path: string,
  identity: string,
): Promise<'removed' | 'absent' | 'other'> {
  await ctx.guardPath(path);
  return ctx.run('removeIfIdentity', scripts.removeIfIdentity(path, identity), parse.parseRemoveOwn);
}
