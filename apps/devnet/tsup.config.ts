import { packageConfig } from '@resultity/tooling/tsup';

// An app, not a library: no declarations. The testkit is never built, so its source is bundled.
export default packageConfig({ entry: ['src/devnet.ts'], dts: false, noExternal: ['@resultity/node-kit', '@resultity/testkit'] });
