import { pathRulesOfStyle } from '../../drivers/path-rules';
import { type CopyClaim, PART_SUFFIX } from '../../transfer/copy-local';
import type { MigrationContext } from '../types';
import type { StepDeps } from './deps';

/** An ownership record written before the file is created; its identity is not known yet. */
export const PENDING_IDENTITY = 'pending';

/** The proof of ownership of `path` on `host` for this migration's copies (see CopyClaim). */
export function claimFor(
  ctx: MigrationContext,
  deps: StepDeps,
  host: string,
  p: string,
): CopyClaim | undefined {
  const owned = deps.owned;
  if (!owned) return undefined;
  return {
    intend: () => owned.record(ctx, { host, path: p, identity: PENDING_IDENTITY }),
    record: (identity) => owned.record(ctx, { host, path: p, identity }),
    owns: async (identity) => {
      const recs = (await owned.list(ctx)).filter((r) => r.host === host && r.path === p);
      if (recs.some((r) => r.identity === identity)) return true;
      // created, then the process died before the identity was recorded: adopt (forward only;
      // a rollback removes only recorded identities)
      if (recs.length > 0 && recs.every((r) => r.identity === PENDING_IDENTITY)) {
        await owned.record(ctx, { host, path: p, identity });
        return true;
      }
      return false;
    },
  };
}

/**
 * Who uses each of `paths` of `host`: every domain on that host, and for files on storage the
 * host shares with its cluster, every domain on those hosts too (named `domain@host`). Names
 * compare as the host's filesystem compares them (Windows: case-insensitively): each of `paths`
 * gets the users of every spelling of it.
 */
export async function usersOf(
  deps: StepDeps,
  host: string,
  paths: readonly string[],
): Promise<Map<string, Set<string>>> {
  const drv = deps.driverFor(host);
  const rules = pathRulesOfStyle(drv.paths.style);
  const key = (p: string): string => rules.key(p);
  const asked = new Map(paths.map((p) => [key(p), p]));
  const out = new Map<string, Set<string>>();
  const add = (p: string, users: Iterable<string>): void => {
    const as = asked.get(key(p)) ?? p;
    out.set(as, new Set([...(out.get(as) ?? []), ...users]));
  };
  for (const [p, users] of await drv.filesInUse()) add(p, users);
  const peers = new Set(paths.flatMap((p) => deps.sharedWith?.(host, p) ?? []));
  for (const peer of peers) {
    const seen = await deps.driverFor(peer).filesInUse();
    for (const [q, users] of seen) {
      const p = asked.get(key(q));
      if (p === undefined || !(deps.sharedWith?.(host, p) ?? []).includes(peer)) continue;
      add(
        p,
        [...users].map((u) => `${u}@${peer}`),
      );
    }
  }
  return out;
}

/** Is the file at `p` on `host` the one this migration recorded as created by it? */
export async function ownedHere(
  ctx: MigrationContext,
  deps: StepDeps,
  host: string,
  p: string,
): Promise<boolean> {
  if (!deps.owned) return false;
  const id = await deps.driverFor(host).fileIdentity(p);
  return (
    id !== undefined &&
    (await deps.owned.list(ctx)).some((r) => r.host === host && r.path === p && r.identity === id)
  );
}

/**
 * Remove `p` (and its part file) on `host` only as far as this migration can prove it created
 * them: by the identity recorded before anything was written. Returns the paths left behind
 * (there, but not provably ours).
 */
export async function removeOwned(
  ctx: MigrationContext,
  deps: StepDeps,
  host: string,
  p: string,
): Promise<string[]> {
  const drv = deps.driverFor(host);
  const records = (await deps.owned?.list(ctx)) ?? [];
  const left: string[] = [];
  for (const f of [p, p + PART_SUFFIX]) {
    const mine = records.filter((r) => r.host === host && r.path === p).map((r) => r.identity);
    let gone = false;
    for (const id of mine) {
      const r = await drv.removeIfIdentity(f, id);
      if (r !== 'other') {
        gone = true;
        break;
      }
    }
    if (!gone && (await drv.fileExists(f))) left.push(f);
  }
  return left;
}
