import { testConfig } from '@resultity/tooling/vitest';

export default testConfig();
