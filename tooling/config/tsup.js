// The one build configuration every package extends: ESM for Node 20, with declarations.
/** @param {Partial<import('tsup').Options>} overrides */
export function packageConfig(overrides = {}) {
  return {
    entry: ['src/index.ts'],
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    dts: true,
    sourcemap: true,
    clean: true,
    splitting: false,
    ...overrides,
  };
}
