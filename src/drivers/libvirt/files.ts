/**
 * Files and ownership (copies are the transports', see transfer/transport.ts): checksums, removal and
 * directories, all inside the declared storage (every written or deleted path passes the
 * context's `guard`), and the `dev:ino` identities that prove a file is vmplace's own.
 * Functions of the libvirt driver (see `driver.ts`), each taking the host's {@link LibvirtContext}.
 */
import {
  createExclusive as createExclusiveOn,
  fileIdentity as fileIdentityOn,
  sha256,
} from '../../transfer/copy-local';
import type { LibvirtContext } from './context';

export async function guardPath(ctx: LibvirtContext, path: string): Promise<void> {
  await ctx.guard(path);
}

export function checksum(ctx: LibvirtContext, path: string): Promise<string> {
  return sha256(ctx.exec, path);
}

/** `rm -f`: a missing file is fine; a directory is an error. */
export async function removeFile(ctx: LibvirtContext, path: string): Promise<void> {
  const p = await ctx.guard(path);
  await ctx.run(ctx.exec, ['rm', '-f', '--', p], { timeoutMs: ctx.quickMs });
}

/** `mkdir -p`; a storage root itself is allowed here. */
export async function makeDir(ctx: LibvirtContext, path: string): Promise<void> {
  const p = await ctx.guard(path, { allowRoot: true });
  await ctx.run(ctx.exec, ['mkdir', '-p', '--', p], { timeoutMs: ctx.quickMs });
}

/** `rmdir --ignore-fail-on-non-empty`: an empty directory goes, anything else stays. */
export async function removeDirIfEmpty(ctx: LibvirtContext, path: string): Promise<void> {
  const p = await ctx.guard(path);
  await ctx.run(ctx.exec, ['rmdir', '--ignore-fail-on-non-empty', '--', p], {
    timeoutMs: ctx.quickMs,
    allowExitCodes: [1],
  });
}

// ---------------------------------------------------------------- ownership

export async function fileIdentity(ctx: LibvirtContext, path: string): Promise<string | undefined> {
  return fileIdentityOn(ctx.exec, await ctx.guard(path));
}

export async function createExclusive(ctx: LibvirtContext, path: string): Promise<string> {
  return createExclusiveOn(ctx.exec, await ctx.guard(path));
}

/**
 * Remove `path` only when its identity (`dev:ino`) is `identity`, in one command on the host
 * (the identity is compared right before `rm`).
 */
export async function removeIfIdentity(
  ctx: LibvirtContext,
  path: string,
  identity: string,
): Promise<'removed' | 'absent' | 'other'> {
  const p = await ctx.guard(path);
  const r = await ctx.run(
    ctx.exec,
    [
      'sh',
      '-c',
      'id=$(stat -c %d:%i -- "$1" 2>/dev/null) || exit 3\n[ "$id" = "$2" ] || exit 4\nexec rm -f -- "$1"',
      'vmplace-rm-own',
      p,
      identity,
    ],
    { allowExitCodes: [3, 4], timeoutMs: ctx.quickMs },
  );
  return r.exitCode === 0 ? 'removed' : r.exitCode === 3 ? 'absent' : 'other';
}
