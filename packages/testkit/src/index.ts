export * from './fixtures.js';
export * from './signer.js';
export * from './tempdir.js';
export * from './oracle.js';
export * from './nginx.js';
export * from './until.js';
export * from './agent-builds.js';
