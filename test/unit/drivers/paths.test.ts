import { StalledError } from '../../../src/errors';
import { assertInside, isInside, normaliseAbsolute } from '../../../src/drivers/paths';

describe('normaliseAbsolute', () => {
  it.each([
    ['/srv/a', '/srv/a'],
    ['/srv//a///b', '/srv/a/b'],
    ['/srv/./a/', '/srv/a'],
    ['/', '/'],
  ])('%j -> %j', (input, out) => expect(normaliseAbsolute(input)).toBe(out));

  it.each([['relative/a'], [''], ['/srv/../etc'], ['/srv/a/..'], ['..'], ['/srv/a\0b']])(
    'rejects %j',
    (input) => expect(normaliseAbsolute(input)).toBeUndefined(),
  );
});

describe('assertInside', () => {
  const roots = ['/srv/a', '/var/lib/vmplace/state/'];

  it.each([
    ['/srv/a/disk.qcow2'],
    ['/srv/a/sub/dir/disk.qcow2'],
    ['/srv//a//disk.qcow2'],
    ['/srv/a/./disk.qcow2'],
    ['/var/lib/vmplace/state/vm1.state'],
    ['/srv/a/..disk'],
    ['/srv/a/disk..qcow2'],
  ])('accepts %j', (p) => {
    expect(assertInside(p, roots)).toBe(p.replace(/\/\.\//g, '/').replace(/\/+/g, '/'));
  });

  it.each([
    ['/srv/ab/disk.qcow2', 'prefix trick: /srv/a vs /srv/ab'],
    ['/srv/a-evil/disk', 'prefix trick with dash'],
    ['/srv/a/../b/disk', 'dot-dot escaping'],
    ['/srv/a/sub/../../etc/passwd', 'deep dot-dot'],
    ['/srv/a/sub/..', 'dot-dot back to the root'],
    ['srv/a/disk', 'relative'],
    ['', 'empty'],
    ['/srv/a', 'the root itself'],
    ['/srv/a/', 'the root itself with slash'],
    ['//srv/a', 'the root with a doubled slash'],
    ['/srv', 'a parent of a root'],
    ['/', 'slash'],
    ['/etc/passwd', 'elsewhere'],
    ['/srv/a/x\0/etc', 'NUL byte'],
  ])('rejects %j (%s)', (p) => {
    let err: unknown;
    try {
      assertInside(p, roots);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StalledError);
    expect((err as StalledError).reason).toBe('PathOutsideStorage');
  });

  it('accepts a root itself only with allowRoot', () => {
    expect(assertInside('/srv/a/', roots, { allowRoot: true })).toBe('/srv/a');
  });

  it('rejects everything with no roots', () => {
    expect(() => assertInside('/srv/a/x', [])).toThrow(StalledError);
  });

  it('is segment-aware in both directions', () => {
    expect(isInside('/srv/a/x', '/srv/ab')).toBe(false);
    expect(isInside('/srv/ab/x', '/srv/a')).toBe(false);
    expect(isInside('/srv/a/x', '/')).toBe(true);
  });

  it('does not trust a root that contains dot-dot', () => {
    expect(isInside('/etc/x', '/srv/../etc')).toBe(false);
  });
});
