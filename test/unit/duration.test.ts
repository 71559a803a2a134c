import { StalledError } from '../../src/errors';
import { formatDuration, parseDuration } from '../../src/duration';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['0s', 0],
    ['2s', 2000],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['90m', 5_400_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    [''],
    ['30'],
    ['1.5s'],
    ['-1s'],
    [' 2s'],
    ['2s '],
    ['2 s'],
    ['1m30s'],
    ['2S'],
    ['1d'],
    ['ms'],
    ['1e3ms'],
    ['999999999999999h'],
  ])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(StalledError);
    expect(() => parseDuration(text)).toThrow(
      expect.objectContaining({
        reason: 'InvalidDuration',
        message: expect.stringContaining(
          `${JSON.stringify(text)}: expected a whole number followed by ms, s, m or h`,
        ),
      }),
    );
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [500, '500ms'],
    [1500, '1500ms'],
    [2000, '2s'],
    [90_000, '90s'],
    [300_000, '5m'],
    [3_600_000, '1h'],
    [5_400_000, '90m'],
    [1.4, '1ms'],
  ])('%d ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('round-trips through parseDuration', () => {
    for (const ms of [0, 1, 999, 1000, 61_000, 7_200_000, 86_400_000]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });

  it.each([[-1], [NaN], [Infinity]])('rejects %d', (ms) => {
    expect(() => formatDuration(ms)).toThrow(RangeError);
  });
});
