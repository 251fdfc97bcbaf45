import { packageConfig } from '@resultity/tooling/tsup';

export default packageConfig();
