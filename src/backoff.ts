/**
 * The one backoff: the n-th retry (1-based) waits between half and all of
 * min(maxMs, baseMs × 2^(n−1)) (exponential, with jitter so that many retries do not line up).
 * Used for step retries, per-VM migration retries and status pushes.
 */
export function backoffDelay(
  n: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, n - 1));
  return ceiling / 2 + (random() * ceiling) / 2;
}
