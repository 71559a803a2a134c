import { backoffDelay } from '../../src/backoff';

describe('the one backoff', () => {
  it.each([
    [1, 0, 500],
    [1, 1, 1000],
    [2, 1, 2000],
    [4, 0, 4000],
    [20, 1, 60_000], // capped
  ])('retry %i with random %d waits %d ms (base 1 s, max 60 s)', (n, r, want) => {
    expect(backoffDelay(n, 1000, 60_000, () => r)).toBe(want);
  });
});
