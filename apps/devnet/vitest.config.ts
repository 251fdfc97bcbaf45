import { testConfig } from '@resultity/tooling/vitest';

// Two cores and a shared Docker engine: one test file at a time.
export default testConfig({ fileParallelism: false });
