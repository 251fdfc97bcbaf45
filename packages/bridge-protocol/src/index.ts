export * from './errors.js';
export * from './environment.js';
export * from './messages.js';
export { validateJob, readPath, ruleHolds, JobRequestSchema } from './job.js';
export type { JobRequest, JobRequestInput } from './job.js';
export { TOKEN_PATTERN, checkToken, readTokenFile, ensureTokenFile } from './token-file.js';
