export {
  writeFileAtomic,
  removeStaleTempFiles,
  ATOMIC_TEMP_PATTERN,
  fsyncDirectory,
  readFileBounded,
  readRegularFileSync,
  describeFsError,
  FileError,
} from './fs.js';
export type { FileErrorCode } from './fs.js';
export { CodedError, isCodedError, isRetryable } from './errors.js';
export type { CodedErrorOptions } from './errors.js';
export { parseListen, isLoopbackHost } from './listen.js';
export type { ListenAddress } from './listen.js';
export { bearerMatches, tokenDigest } from './bearer.js';
export { silentLogger } from './ports.js';
export type { Logger, Clock } from './ports.js';
