// The one build configuration every package extends: ESM for Node 20, with declarations.
// @resultity/node-kit is private and never published, so whoever imports it carries it: its
// code is bundled into the dist and its types inlined into the .d.ts.
const BUNDLED = ['@resultity/node-kit'];

/** @param {Partial<import('tsup').Options>} overrides */
export function packageConfig(overrides = {}) {
  return {
    entry: ['src/index.ts'],
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    dts: { resolve: BUNDLED },
    noExternal: BUNDLED,
    sourcemap: true,
    clean: true,
    splitting: false,
    ...overrides,
  };
}
