import { testConfig } from '@resultity/tooling/vitest';

// The integration tests share one Docker engine and two cores: run files one after another.
export default testConfig({ fileParallelism: false });
