import { masterSocketPath } from '../../../src/transfer/ssh-master';

describe('masterSocketPath', () => {
  it('puts the socket next to the source under a random name', () => {
    expect(masterSocketPath('/srv/vmplace/local/vm/vm.state', 'a1b2c3d4e5f6')).toBe(
      '/srv/vmplace/local/vm/.vmplace-ssh-a1b2c3d4e5f6',
    );
    const a = masterSocketPath('/srv/x/vm.state');
    const b = masterSocketPath('/srv/x/vm.state');
    expect(a).toMatch(/^\/srv\/x\/\.vmplace-ssh-[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
  });

  it.each([
    ['too long for a socket name', `/srv/${'d'.repeat(90)}/vm.state`],
    ['a % (ssh expands tokens in ControlPath)', '/srv/50%/vm.state'],
    ["a ' (rsync splits its -e value)", "/srv/it's/vm.state"],
    ['a space', '/srv/my vms/vm.state'],
  ])('gives none for a directory with %s: the copy connects on its own', (_what, src) => {
    expect(masterSocketPath(src)).toBeUndefined();
  });
});
