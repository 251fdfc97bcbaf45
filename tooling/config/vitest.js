// Shared test settings: unit tests beside the code, integration tests under test/.
/** @param {Record<string, unknown>} overrides */
export function testConfig(overrides = {}) {
  return {
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      environment: 'node',
      testTimeout: 30_000,
      hookTimeout: 120_000,
      ...overrides,
    },
  };
}
