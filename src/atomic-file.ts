/**
 * The one way vmplace replaces a file on this machine: readers see the old content or the new,
 * never a mix, and a crash leaves one of the two. The new content goes to a temporary file with
 * a random name in the same directory, created with `O_CREAT|O_EXCL|O_NOFOLLOW` (so neither a
 * file nor a symbolic link planted at that name is written through), flushed, and renamed onto
 * the file; then the directory is flushed so the rename itself survives a power loss. `rename`
 * replaces a symbolic link at the file itself, never its target.
 *
 * It does not check the directories on the way: a caller that writes below a directory it does
 * not control (the daemon's clone, whose content a pull request decides) checks them first (see
 * `writeRepoFile` in `status/`). Sync and async forms behave the same.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Options of {@link writeFileAtomic} and {@link writeFileAtomicSync}. */
export interface AtomicWriteOptions {
  /** Permission bits of a new file (default 0o600); an existing file's are not kept. */
  mode?: number;
  /**
   * Flush the directory after the rename (default true). False for a caller that writes many
   * files into one directory and calls {@link fsyncDir} once after the last.
   */
  syncDir?: boolean;
}

const CREATE_NEW =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/** `.NAME.PID.RANDOM.tmp` beside `file`: hidden, unique, never the name of a file vmplace reads. */
function tempPathFor(file: string): string {
  return path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
  );
}

/** Replace `file` with `data` atomically and durably (see the file comment). */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const tmp = tempPathFor(file);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(tmp, CREATE_NEW, opts.mode ?? 0o600);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (opts.syncDir !== false) await fsyncDir(path.dirname(file));
}

/** {@link writeFileAtomic}, synchronously. */
export function writeFileAtomicSync(
  file: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): void {
  const tmp = tempPathFor(file);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, CREATE_NEW, opts.mode ?? 0o600);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  if (opts.syncDir !== false) fsyncDirSync(path.dirname(file));
}

/** Flush a directory, so renames and removals in it survive a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await fs.promises.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** {@link fsyncDir}, synchronously. */
export function fsyncDirSync(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
