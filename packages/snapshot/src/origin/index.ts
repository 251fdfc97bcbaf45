export * from './layout.js';
export * from './publish.js';
export * from './server.js';
