/** @type {import('jest').Config} */
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { warnOnly: false } }];
module.exports = {
  // A guard against a hang, not a measure (speed is measured in bench/): the suite must pass on
  // a busy machine, where a real git repository or a crash table can take several seconds.
  testTimeout: 30_000,
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      testTimeout: 30_000,
      transform: { '^.+\\.ts$': tsJest },
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
    },
    {
      displayName: 'lab',
      testEnvironment: 'node',
      transform: { '^.+\\.ts$': tsJest },
      testMatch: ['<rootDir>/test/lab/**/*.test.ts'],
      // lab tests use the real CLI from dist/
      globalSetup: '<rootDir>/test/lab/global-setup.js',
    },
  ],
};
