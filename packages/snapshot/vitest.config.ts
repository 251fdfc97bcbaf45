import { fileURLToPath } from 'node:url';

import { testConfig } from '@resultity/tooling/vitest';

// The testkit builds on this package, so it cannot be a dependency of it (turbo would see a
// cycle). Its source is aliased instead, and both resolve to this package's own source.
export default {
  ...testConfig(),
  resolve: {
    alias: {
      '@resultity/testkit': fileURLToPath(new URL('../testkit/src/index.ts', import.meta.url)),
      '@resultity/snapshot': fileURLToPath(new URL('./src/index.ts', import.meta.url)),
    },
  },
};
