/**
 * Copying a migration's files on and between Hyper-V hosts (Windows, PowerShell over ssh): the
 * transports `transportFor` gives for a pair of Hyper-V hosts (drivers/factory.ts).
 *
 * **Between two hosts** (`windows-ssh`): the source host runs Windows' OpenSSH client,
 * `scp.exe -s` (SFTP: the remote path never passes through the target's shell), to the target's
 * sshd at its transfer address, as the target's ssh user, with the key and known_hosts of the
 * account vmplace logs in as ON THE SOURCE HOST (`~\.ssh`; docs/hyperv.md says how to provision
 * them), host key checked (`StrictHostKeyChecking=yes`, `BatchMode=yes`: an unknown key fails the
 * copy, never a prompt), no agent, no forwarding. Data flows host to host, never through the
 * management box; there is no relay (a pair whose source cannot reach the target's sshd copies
 * nothing: `TargetUnreachable`). The bytes go to `DST.vmplace-part`.
 *
 * **On one host** (`windows-local`): .NET streams copy the file into `DST.vmplace-part` on the host.
 *
 * Both then verify and finish the same way: `Get-FileHash -Algorithm SHA256` of the source (on
 * the source host, while the data travels: the files copied do not change while they are copied)
 * and, in one script on the target, flush the part to disk, hash it, and only when the hashes are
 * equal rename it to `DST` with `[IO.File]::Move`, which never replaces a file (see
 * `scripts.finishCopy`). A file named `DST` is always complete and verified.
 *
 * With a claim (`CopyClaim`), the part is created exclusively first (`createExclusive`), its
 * identity recorded before any data is written; the copy writes into that file (scp's SFTP opens
 * it for writing and truncates it; .NET opens it as it is), and the rename keeps its identity. A
 * part the claim does not own stops the copy (`PartFileNotOwned`); without a claim a part left by
 * an interrupted run is ours by its name and removed.
 *
 * A saved state is several files (`x.vmrs`, its guest state `x.vmgs`, the VM's configuration
 * `x.vmcx` and its checkpoints' `x.checkpoint-<id>.*`, see `stateSidecarsIn`): copying `x.vmrs`
 * copies the others there first, each verified the same way, so that `x.vmrs` on the target
 * means the whole state is there.
 *
 * Idempotent: a `DST` that already matches the source (by SHA-256) is done; one that differs is
 * never overwritten (`DestinationDiffers`). Every PowerShell script is one of scripts.ts (every
 * value a single-quoted literal made by `psQuote`).
 */
import { StalledError, VmplaceError } from '../../errors';
import type { HyperVDriver } from './driver';
import { stateStem } from './names';
import * as parse from './parsers';
import * as scripts from './scripts';
import { PART_SUFFIX } from '../../transfer/copy-local';
import type { Transport, TransportCopyOptions, TransportCopyResult } from '../../transfer/transport';

/** How the source host reaches the target's sshd: address, user (empty: the source account's name), port. */
export interface WindowsTargetSsh {
  host: string;
  user: string;
  port: number;
}

/** What the transports ask of a Hyper-V host: its driver (scripts, guard, files). */
type HvHost = Pick<
  HyperVDriver,
  | 'hostName'
  | 'run'
  | 'guardPath'
  | 'fileInfo'
  | 'checksum'
  | 'removeFile'
  | 'createExclusive'
  | 'stateSidecarFiles'
>;

/**
 * The SFTP path of a Windows drive path, as Windows' sftp-server takes it: `D:\VMs\x` ->
 * `/D:/VMs/x`. A share (`\\server\share`) is refused: scp writes to the target host's own disks.
 */
export function sftpPathOf(windowsPath: string): string {
  if (!/^[A-Za-z]:\\/.test(windowsPath))
    throw new StalledError(
      'NotSupportedByDriver',
      `${windowsPath} is not on a drive of the target host; copies between Hyper-V hosts go to a drive path`,
    );
  return `/${windowsPath.replace(/\\/g, '/')}`;
}

/** Two Hyper-V hosts: `scp.exe -s` from the source host to the target's sshd, verified by SHA-256 on both. */
export function windowsSshTransport(source: HvHost, target: HvHost, targetSsh: WindowsTargetSsh): Transport {
  return {
    name: 'windows-ssh',
    reachable: () =>
      source.run('reachable', scripts.tcpReachable(targetSsh.host, targetSsh.port), parse.parseReachable),
    copy: async (src, dst, opts = {}) => {
      if (opts.mode === 'relay')
        throw new StalledError(
          'TargetUnreachable',
          `${source.hostName} cannot reach ${target.hostName}'s sshd, and copies between Hyper-V hosts are not relayed through the management box`,
        );
      const sha256 = await copyWithSidecars(source, target, src, dst, opts, (from, part, o) =>
        source
          .run(
            'copy',
            scripts.scpToHost(from, targetSsh.user, targetSsh.host, targetSsh.port, sftpPathOf(part), {
              ...(o.bwlimitKiBps ? { limitKbit: o.bwlimitKiBps * 8 } : {}),
            }),
            parse.parseCopied,
            { timeoutMs: null, ...(o.signal ? { signal: o.signal } : {}) },
          )
          .then(() => undefined),
      );
      return { mode: 'direct', sha256 };
    },
  };
}

/** One Hyper-V host: a .NET stream copy into the part file, verified by SHA-256, renamed into place. */
export function windowsLocalTransport(host: HvHost): Transport {
  return {
    name: 'windows-local',
    reachable: () => Promise.resolve(true),
    copy: (src, dst, opts = {}) =>
      copyWithSidecars(host, host, src, dst, opts, (from, part, o) =>
        host
          .run('copy', scripts.copyIntoPart(from, part), parse.parseCopiedLength, {
            timeoutMs: null,
            ...(o.signal ? { signal: o.signal } : {}),
          })
          .then(() => undefined),
      ).then((sha256): TransportCopyResult => ({ mode: 'local', sha256 })),
  };
}

type CopyBytes = (src: string, part: string, opts: TransportCopyOptions) => Promise<void>;

/** A saved state's sidecars first (each verified), then the file itself; the file's SHA-256. */
async function copyWithSidecars(
  source: HvHost,
  target: HvHost,
  src: string,
  dst: string,
  opts: TransportCopyOptions,
  bytes: CopyBytes,
): Promise<string> {
  // the source is still being written (a state being saved): nothing is read before it ends
  await opts.sourceReady;
  const srcStem = stateStem(src);
  const dstStem = stateStem(dst);
  if ((srcStem === undefined) !== (dstStem === undefined))
    throw new StalledError('NotSupportedByDriver', `${src} is a saved state and ${dst} is not named as one`);
  // those there now (a VM without a guest state has no .vmgs; checkpoints' files by their ids)
  const present = srcStem !== undefined ? await step(opts, () => source.stateSidecarFiles(src)) : [];
  for (const f of present) {
    // the same name after the stem (stateSidecarsIn matched the stem without regard to case)
    const to = `${dstStem!}${f.path.slice(srcStem!.length)}`;
    await copyOne(source, target, f.path, to, { ...without(opts, 'claim') }, bytes);
  }
  return copyOne(source, target, src, dst, opts, bytes);
}

function without<T extends object, K extends keyof T>(o: T, key: K): Omit<T, K> {
  const { [key]: _drop, ...rest } = o;
  return rest;
}

async function step<T>(opts: TransportCopyOptions, f: () => Promise<T>): Promise<T> {
  await opts.fence?.();
  return f();
}

/** One file: look at both ends, claim or clear the part, copy, verify and rename (see the file comment). */
async function copyOne(
  source: HvHost,
  target: HvHost,
  src: string,
  dst: string,
  opts: TransportCopyOptions,
  bytes: CopyBytes,
): Promise<string> {
  const part = `${dst}${PART_SUFFIX}`;
  await step(opts, () => Promise.all([target.guardPath(dst), target.guardPath(part)]));
  const [s, d, p] = await step(opts, () =>
    Promise.all([source.fileInfo(src), target.fileInfo(dst), target.fileInfo(part)]),
  );
  if (!s.exists || s.isDirectory)
    throw new StalledError('SourceMissing', `copy source ${src} does not exist on ${source.hostName}`);
  const total = s.length ?? 0;
  if (d.exists) {
    if (opts.claim && !(await opts.claim.owns(d.identity)))
      throw new StalledError(
        'DestinationExists',
        `${dst} exists on ${target.hostName} and was not created by this migration`,
      );
    const [a, b] = await step(opts, () => Promise.all([source.checksum(src), target.checksum(dst)]));
    if (a === b) {
      opts.onProgress?.(total, total);
      return a;
    }
    throw new StalledError(
      'DestinationDiffers',
      `${dst} on ${target.hostName} exists and differs from ${src}; not overwriting`,
    );
  }
  if (opts.claim) {
    if (p.exists && !(await opts.claim.owns(p.identity)))
      throw new StalledError(
        'PartFileNotOwned',
        `${part} exists on ${target.hostName} and was not created by this migration`,
      );
    if (!p.exists) {
      await opts.claim.intend?.();
      await opts.claim.record(await step(opts, () => target.createExclusive(part)));
    }
  } else if (p.exists) {
    // left by an interrupted copy: ours by its name
    await step(opts, () => target.removeFile(part));
  }
  opts.onProgress?.(0, total);
  const digest = step(opts, () => source.checksum(src));
  digest.catch(() => undefined); // awaited below
  await step(opts, () => bytes(src, part, opts));
  const sha256 = await digest;
  const finished = await step(opts, () =>
    target.run('finishCopy', scripts.finishCopy(part, dst, sha256), parse.parseFinishCopy),
  );
  if (!finished.moved)
    throw new VmplaceError(
      'CopyVerifyFailed',
      `sha256 of ${part} on ${target.hostName} (${finished.hash}) differs from ${src} on ${source.hostName} (${sha256})`,
    );
  opts.onProgress?.(total, total);
  return sha256;
}
