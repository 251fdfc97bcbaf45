export * from './errors.js';
export { startBridgeEndpoint, isLoopbackHost, bearerMatches } from './endpoint.js';
export type { BridgeEndpoint, BridgeEndpointOptions, BridgeAck, EndpointStats, EndpointLogger, ListenAddress } from './endpoint.js';
export { TokenBucket, systemClock } from './rate-limit.js';
export type { Clock } from './rate-limit.js';
// The Agent reads (or creates) the token file the same way the bridge does.
export { readTokenFile, ensureTokenFile, BRIDGE_SUBPROTOCOL, CLOSE_CODES } from '@resultity/bridge-protocol';
export type { RuntimeEnvironment } from '@resultity/bridge-protocol';
