/**
 * The fence of one migration run, when several daemon replicas share a fleet (see
 * src/coord/): `check` before every side effect (throws a `FencedError` when the run's lock is no
 * longer held, or when the lease may have expired: its last successful keepalive was sent more
 * than half the TTL ago), `held` before every state write (the write itself is a transaction
 * that requires the lock's revision). The single daemon's fence lets everything through.
 */
export interface Fence {
  /** the lock's create revision this run is bound to ('' for the single daemon) */
  readonly revision: string;
  check(): void;
  held(): boolean;
  /**
   * Resolves once `check` would pass: at once, or when a keepalive succeeds again after a
   * short outage (an etcd leader election); rejects with `FencedError` once the lock is lost.
   * Wait for it, then `check` synchronously right before the effect.
   */
  ready(): Promise<void>;
}

export const NO_FENCE: Fence = {
  revision: '',
  check: () => undefined,
  held: () => true,
  ready: () => Promise.resolve(),
};

/** Wait until `fence` lets an effect start, then check it once more right before it. */
export async function passFence(fence: Fence): Promise<void> {
  try {
    fence.check();
    return;
  } catch {
    // stale (etcd away for a moment) or lost: wait for either
  }
  await fence.ready();
  fence.check();
}
