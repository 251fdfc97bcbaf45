export * from './errors.js';
export type * from './types.js';
export type * from './ports.js';
export { evaluateParticipation, desiredStateFrom, meetsRequirements } from './participation.js';
export { withRuntimeUpdate } from './runtime-update.js';
export { plan, describeStep, DEFAULT_HEALTH_TIMEOUT_MS } from './plan.js';
export {
  definitionOf,
  definitionHash,
  assertDefinitionAllowed,
  gpusFor,
  BRIDGE_MOUNT,
  BRIDGE_ENV,
  DEFAULT_PIDS_LIMIT,
  canonicalDefinition,
  containerNameFor,
  networkModeFor,
  registryOf,
  assertRegistryAllowed,
  hasRepoDigest,
  labelKeys,
  MANAGED_BY,
  DEFAULT_LABEL_PREFIX,
  DEFAULT_CONTAINER_PREFIX,
} from './definition.js';
export { execute } from './execute.js';
export { planCollection, executeCollection } from './collect.js';
export type { CollectableStore, CollectionPlan, CollectionReport, KeptModel, StoreFile, StoreInventory } from './collect.js';
export type { ExecuteOptions } from './execute.js';
export { readCurrentState, createDefaultPorts, modelPath, observedFrom } from './state.js';
export type { DefaultPortsOptions } from './state.js';
export { fetchModel } from './fetch.js';
export { fetchChunked, loadChunkList, DEFAULT_CONNECTIONS } from './chunked.js';
export type { ChunkedFetchOptions, ChunkedReport, DownloadDetail, MirrorProgress } from './chunked.js';
export { OriginChunkLists } from './chunk-lists.js';
export type { FetchModelOptions, FetchReport } from './fetch.js';
export { DockerEngine, dockerCreateOptions } from './docker.js';
export type { DockerEngineOptions } from './docker.js';
export { FsModelStore, assertSha256 } from './store.js';
export { HttpDownloader, HttpStatusError, DEFAULT_MIN_BYTES_PER_SECOND, DEFAULT_RATE_WINDOW_MS } from './http.js';
export { refusedAddress } from './address.js';
export type { HttpDownloaderOptions } from './http.js';
export { FileFlagsStore, systemClock } from './flags.js';
