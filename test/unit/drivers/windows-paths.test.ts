import { checkWindowsPath, isInsideWindows, WINDOWS_PATHS } from '../../../src/drivers/windows-paths';

describe('checkWindowsPath', () => {
  it.each([
    'D:\\VMs',
    'C:\\ClusterStorage\\Volume1',
    'D:\\',
    '\\\\fileserver\\vms',
    '\\\\fileserver\\vms\\hyper-v\\My VMs',
    'D:\\My VMs\\disk~1 with a long name.vhdx',
  ])('accepts %j', (p) => {
    expect(checkWindowsPath(p)).toBeUndefined();
  });

  it.each([
    ['', /empty/],
    ['VMs', /not absolute/],
    ['D:VMs', /not absolute/],
    ['\\VMs', /not absolute/],
    ['D:/VMs', /"\/"/],
    ['D:\\VMs\\', /ends with/],
    ['D:\\VMs.', /strips/],
    ['D:\\VMs ', /strips/],
    ['D:\\a\\..\\b', /"\.\." segment/],
    ['D:\\a\\.\\b', /"\." segment/],
    ['D:\\a\\\\b', /empty segment/],
    ['D:\\VMs\\a.vhdx:evil', /reserves/],
    ['D:\\VMs\\a\u0007', /reserves/],
    ['D:\\CON', /reserved device/],
    ['D:\\x\\nul.vhdx', /reserved device/],
    ['D:\\x\\COM1', /reserved device/],
    ['C:\\PROGRA~1', /short name/],
    ['\\\\?\\C:\\x', /device namespace/],
    ['\\\\.\\PhysicalDrive0', /device namespace/],
    ['\\\\server', /not absolute/],
  ])('refuses %j', (p, why) => {
    expect(checkWindowsPath(p)).toMatch(why);
  });
});

describe('WINDOWS_PATHS', () => {
  it('compares case-insensitively, by whole segments', () => {
    expect(isInsideWindows('d:\\vms\\vm1\\a.vhdx', 'D:\\VMs')).toBe(true);
    expect(isInsideWindows('D:\\VMs2\\a.vhdx', 'D:\\VMs')).toBe(false);
    expect(isInsideWindows('D:\\VMs', 'D:\\VMs')).toBe(false);
    expect(isInsideWindows('D:\\a.vhdx', 'D:\\')).toBe(true);
    expect(isInsideWindows('\\\\fs\\vms\\a', '\\\\FS\\VMS')).toBe(true);
    expect(isInsideWindows('\\\\fs\\vms2\\a', '\\\\fs\\vms')).toBe(false);
  });

  it('is never fooled by a path it would refuse', () => {
    expect(isInsideWindows('D:\\VMs\\..\\Windows\\x', 'D:\\VMs')).toBe(false);
    expect(isInsideWindows('D:\\VMs\\a.vhdx:ads', 'D:\\VMs')).toBe(false);
    expect(isInsideWindows('D:\\VMs\\PROGRA~1\\x', 'D:\\VMs')).toBe(false);
    expect(isInsideWindows('D:\\VMs/../x', 'D:\\VMs')).toBe(false);
  });

  it('joins and splits with backslashes', () => {
    expect(WINDOWS_PATHS.join('D:\\VMs', 'vm1', 'a.vhdx')).toBe('D:\\VMs\\vm1\\a.vhdx');
    expect(WINDOWS_PATHS.dirname('D:\\VMs\\vm1\\a.vhdx')).toBe('D:\\VMs\\vm1');
    expect(WINDOWS_PATHS.basename('D:\\VMs\\vm1\\a.vhdx')).toBe('a.vhdx');
    expect(WINDOWS_PATHS.style).toBe('windows');
  });
});
