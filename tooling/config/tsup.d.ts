import type { Options } from 'tsup';
export declare function packageConfig(overrides?: Partial<Options>): Options;
