export * from './layout.js';
export * from './publish.js';
export * from './server.js';
export { LONG_POLL_HEADER, LONG_POLL_MAX_WAIT_S, parseWait, watchDirectory } from './long-poll.js';
export type { WatchDirectory } from './long-poll.js';
