import { existsSync } from 'node:fs';

/**
 * Lab tests run against the real local libvirt. They skip (loudly) only when virsh is not
 * installed AND `VMPLACE_REQUIRE_LAB` is unset; CI sets it, so there they fail instead.
 */
export function labDescribe(): jest.Describe {
  const have = existsSync('/usr/bin/virsh');
  const required = Boolean(process.env.VMPLACE_REQUIRE_LAB);
  if (have || required) return describe;
  console.warn(
    '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' +
      '!!! SKIPPING driver lab tests: /usr/bin/virsh is missing and VMPLACE_REQUIRE_LAB\n' +
      '!!! is not set. Run scripts/lab/install.sh, or set VMPLACE_REQUIRE_LAB=1 to fail.\n' +
      '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n',
  );
  return describe.skip;
}
