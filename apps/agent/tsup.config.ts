import { packageConfig } from '@resultity/tooling/tsup';

export default packageConfig({ entry: ['src/index.ts', 'src/cli.ts'] });
