/**
 * Each driver's path rules (issue 15): libvirt keeps the POSIX rules the planner always had,
 * byte for byte; Hyper-V gets the Windows rules, compared case-insensitively and refusing what
 * `checkWindowsPath` refuses.
 */
import { POSIX_PATHS } from '../../../src/drivers/driver';
import { pathRulesFor, pathRulesOfStyle, POSIX_RULES, WINDOWS_RULES } from '../../../src/drivers/path-rules';
import { WINDOWS_PATHS } from '../../../src/drivers/windows-paths';

describe('pathRulesFor', () => {
  it.each([
    ['hyperv', WINDOWS_RULES],
    ['libvirt', POSIX_RULES],
    [undefined, POSIX_RULES],
    ['xen', POSIX_RULES],
  ])('%s', (driver, rules) => {
    expect(pathRulesFor(driver)).toBe(rules);
  });

  it('by style, and each carries its driver path semantics', () => {
    expect(pathRulesOfStyle('windows')).toBe(WINDOWS_RULES);
    expect(pathRulesOfStyle('posix')).toBe(POSIX_RULES);
    expect(WINDOWS_RULES.style).toBe(WINDOWS_PATHS.style);
    expect(WINDOWS_RULES.join('D:\\VMs', 'vm1', 'a.vhdx')).toBe('D:\\VMs\\vm1\\a.vhdx');
    expect(POSIX_RULES.style).toBe(POSIX_PATHS.style);
    expect(POSIX_RULES.join('/srv/a', 'vm1', 'a.qcow2')).toBe('/srv/a/vm1/a.qcow2');
  });
});

describe('POSIX_RULES (libvirt)', () => {
  it.each<[string, boolean]>([
    ['/srv/a/web.qcow2', true],
    ['/', true],
    ['/srv/a/', false],
    ['/srv//a', false],
    ['/srv/./a', false],
    ['/srv/a/../../etc', false],
    ['srv/a', false],
    ['D:\\VMs', false],
  ])('check(%j) accepts: %s', (p, ok) => {
    expect(POSIX_RULES.check(p) === undefined).toBe(ok);
  });

  it.each<[string, string, boolean]>([
    ['/srv/a/x', '/srv/a', true],
    ['/srv/a', '/srv/a', true],
    ['/srv/a/', '/srv/a', true],
    ['/srv/ab', '/srv/a', false],
    ['/srv/A/x', '/srv/a', false],
    ['/x', '/', true],
  ])('isAtOrInside(%j, %j): %s', (p, dir, inside) => {
    expect(POSIX_RULES.isAtOrInside(p, dir)).toBe(inside);
  });

  it('compares byte for byte and normalises as posix.normalize', () => {
    expect(POSIX_RULES.key('/srv/A.qcow2')).toBe('/srv/A.qcow2');
    expect(POSIX_RULES.normalise('/srv//a/./b/')).toBe('/srv/a/b/');
    expect(POSIX_RULES.normalise('/srv/a')).toBe('/srv/a');
    expect(POSIX_RULES.isAbsolute('/srv')).toBe(true);
    expect(POSIX_RULES.isAbsolute('D:\\VMs')).toBe(false);
  });
});

describe('WINDOWS_RULES (Hyper-V)', () => {
  it.each<[string, boolean]>([
    ['D:\\VMs\\web\\a.vhdx', true],
    ['\\\\fs\\vms\\a.vhdx', true],
    ['D:\\VMs\\..\\Windows', false],
    ['D:\\VMs\\a.vhdx:ads', false],
    ['C:\\PROGRA~1', false],
    ['\\\\?\\C:\\x', false],
    ['D:/VMs', false],
    ['/srv/a', false],
  ])('check(%j) accepts: %s', (p, ok) => {
    expect(WINDOWS_RULES.check(p) === undefined).toBe(ok);
  });

  it.each<[string, string, boolean]>([
    ['d:\\vms\\vm1\\a.vhdx', 'D:\\VMs', true],
    ['d:\\vms', 'D:\\VMs', true],
    ['D:\\VMs2', 'D:\\VMs', false],
    ['D:\\VMs\\..\\Windows', 'D:\\VMs', false],
    ['D:\\VMs\\PROGRA~1', 'D:\\VMs', false],
    ['D:\\VMs\\', 'D:\\VMs', false],
  ])('isAtOrInside(%j, %j): %s', (p, dir, inside) => {
    expect(WINDOWS_RULES.isAtOrInside(p, dir)).toBe(inside);
  });

  it('compares case-insensitively; paths are accepted only in normal form', () => {
    expect(WINDOWS_RULES.key('D:\\VMs\\vm1\\A.vhdx')).toBe(WINDOWS_RULES.key('d:\\vms\\VM1\\a.VHDX'));
    expect(WINDOWS_RULES.normalise('D:\\VMs\\A.vhdx')).toBe('D:\\VMs\\A.vhdx');
    expect(WINDOWS_RULES.isAbsolute('D:\\VMs')).toBe(true);
    expect(WINDOWS_RULES.isAbsolute('\\\\fs\\vms')).toBe(true);
    expect(WINDOWS_RULES.isAbsolute('D:VMs')).toBe(false);
    expect(WINDOWS_RULES.isAbsolute('/srv/a')).toBe(false);
  });
});
