/**
 * The numbers the migration steps tune themselves with, in one place. Each was measured on the
 * lab (2 cores, TCG guests, network namespaces; see bench/RESULTS.md) and is a starting point,
 * not a law: change one here and the bench says what it did.
 */

/** What a pause costs besides copying the last delta: `virsh save` and `virsh restore` (lab: ~0.5-0.6 s). */
export const PAUSE_FIXED_COST_MS = 600;

/** `spec.maxPause` when the manifest gives none. */
export const DEFAULT_MAX_PAUSE_MS = 1000;

/** The smallest time the delta rounds aim the last delta at, however little of the budget the fixed cost leaves. */
export const MIN_DELTA_BUDGET_MS = 50;

/**
 * Delta rounds stop when a delta is more than this fraction of the one before: the guest
 * writes as fast as the rounds copy, and more rounds would not shrink the pause.
 */
export const DELTA_SHRINK_FACTOR = 0.8;

/** A floor for measured copy rates (bytes per ms, ~10 MB/s), so a tiny or instant copy never predicts an endless one. */
export const MIN_COPY_RATE_BYTES_PER_MS = 10_000;

/** A first delta up to this size is copied in the pause without a round to measure first. */
export const FIRST_DELTA_TRUSTED_BYTES = 4 * 1024 * 1024;

/**
 * Inside the pause, files up to this size cross through the management box over the ssh
 * connections it holds open, instead of rsync's new connection from host to host (~0.2 s of
 * start-up in the lab against ~20 ms).
 */
export const PAUSE_RELAY_BELOW_BYTES = 64 * 1024 * 1024;

/**
 * The switch-over QEMU aims at in a live migration across hosts: the measured stop is longer
 * than QEMU's prediction (device state, the block mirror's last writes), so aim well below
 * the 100 ms a live move promises. A VM written faster than the link can carry keeps
 * iterating; libvirt's job can be cancelled and the VM stays on the source.
 */
export const LIVE_DOWNTIME_MS = 50;

/** How long restore lookups made during CopyingDelta stay fresh enough for Restoring. */
export const PREFETCH_FRESH_MS = 10_000;

/** How long a note of an early delta copy is kept when no CopyingDelta takes it. */
export const EARLY_COPY_FRESH_MS = 60_000;

/** The longest backoff before a failed step runs again (it doubles from `retryBaseMs`). */
export const STEP_RETRY_MAX_MS = 60_000;

/**
 * A live migration of the memory (policy.quickMemory: live) that has not converged after
 * max(this, 3 times the memory at the measured copy rate) is finished paused (virsh
 * `--timeout-suspend`): the guest dirties memory faster than it crosses.
 */
export const LIVE_CONVERGE_MIN_MS = 30_000;
