import type { Clock } from '@resultity/node-kit';

import type { RangeReadRequest, RangeSink } from './range-reader.js';
import type { ContainerDefinition, ParticipationFlags } from './types.js';

/** A container as the engine lists it. */
export interface EngineContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  state: string;
}

/** What the executor needs to know to decide whether a container came up. */
export interface ContainerStatus {
  id: string;
  state: string;
  running: boolean;
  restarting: boolean;
  restartCount: number;
  exitCode: number | null;
  health: 'none' | 'starting' | 'healthy' | 'unhealthy';
  error: string;
}

/** A container to create: its engine name, what it runs, and the labels that let it be read back. */
export interface CreateContainerRequest {
  containerName: string;
  definition: ContainerDefinition;
  labels: Record<string, string>;
}

/** The container engine port; the default adapter speaks to Docker through dockerode. */
export interface ContainerEngine {
  /** Fails with ENGINE_UNAVAILABLE when the engine cannot be reached. */
  ping(): Promise<void>;
  /** Containers (running or not) carrying a label key. */
  listContainers(labelKey: string): Promise<EngineContainer[]>;
  inspectContainer(idOrName: string): Promise<ContainerStatus | null>;
  /** The repo digests of a local image, or null when the engine does not have it. */
  imageRepoDigests(reference: string): Promise<string[] | null>;
  pullImage(reference: string, options: { signal?: AbortSignal; onProgress?: (done: number, total: number | null) => void }): Promise<void>;
  createContainer(request: CreateContainerRequest): Promise<string>;
  startContainer(id: string): Promise<void>;
  stopContainer(id: string, timeoutSeconds: number): Promise<void>;
  removeContainer(id: string): Promise<void>;
}

/** One name@version entry of the model index. */
export interface ModelIndexEntry {
  name: string;
  version: string;
  sha256: string;
  size: number;
}

/** Writes a staged download; one batch of chunks at a time, so writing can overlap receiving. */
export interface PartWriter {
  write(chunks: Uint8Array[]): Promise<void>;
  close(): Promise<void>;
}

/** The content-addressed model store port: blobs under sha256/<hex>, a name@version index, a staging area. */
export interface ModelStore {
  readonly root: string;
  readIndex(): Promise<ModelIndexEntry[]>;
  /** Replaces the index atomically (write, fsync, rename). */
  writeIndex(entries: ModelIndexEntry[]): Promise<void>;
  listBlobs(): Promise<string[]>;
  hasBlob(sha256: string): Promise<boolean>;
  blobPath(sha256: string): string;
  /** Bytes already staged for a blob by an interrupted download (0 when none). */
  partSize(sha256: string): Promise<number>;
  /** A writer of the staged file, appending or from scratch. */
  openPart(sha256: string, append: boolean): Promise<PartWriter>;
  /** Reads the staged bytes, so a resumed download can hash what it already has. */
  readPart(sha256: string): AsyncIterable<Uint8Array>;
  discardPart(sha256: string): Promise<void>;
  /** Moves a verified staged file into the store in one rename. */
  commitPart(sha256: string): Promise<void>;
  removeBlob(sha256: string): Promise<void>;
  /** Bytes free for the store's file system. */
  freeBytes(): Promise<number>;
}

/** The start of a response to a (possibly ranged) GET. */
export interface DownloadResponse {
  /** Where the body starts in the file: the asked offset when the server honoured the range, else 0. */
  offset: number;
  /** The size of the whole file when the server said it. */
  totalBytes: number | null;
  body: AsyncIterable<Uint8Array> & { destroy?: (error?: Error) => void };
}

/** The HTTP downloader port. */
export interface Downloader {
  /**
   * Opens a GET of `url` from `offset`; with `end` (exclusive) only the bytes [offset, end) are
   * asked for, and a server that answers another range is refused for it.
   */
  open(url: string, options: { offset: number; end?: number; signal?: AbortSignal }): Promise<DownloadResponse>;
  /**
   * Optional fast path for a chunk: reads exactly the bytes [start, end) of a file of `size`
   * bytes into reused buffers and hands them to `sink` in order, each batch only until the
   * promise the sink returns settles. Resolves once every byte was handed on and sunk.
   */
  readRange?(url: string, request: RangeReadRequest, sink: RangeSink): Promise<void>;
}

/** Where verified chunk lists come from (SPEC §5 `chunks/{hex}.json`); the Agent provides it from its origin. */
export interface ChunkListSource {
  /** The bytes served for `hex`, at most `maxBytes` (more is refused); verified by the caller. */
  fetch(hex: string, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array>;
}

/** What identifies one chunked download's staged file, so a journal of another layout is never trusted. */
export interface ChunkLayout {
  size: number;
  chunkSize: number;
  /** The chunk list's sha256 (`chunks.sha256`). */
  listSha256: string;
}

/** A staged file written in place, chunk by chunk, with a durable record of the chunks verified. */
export interface ChunkedPart {
  /** The staged file, for the hashing workers to read back. */
  readonly path: string;
  /** Chunks verified and flushed by an earlier run (the journal), never fetched again. */
  readonly done: ReadonlySet<number>;
  /** Writes bytes at a position of the staged file (positional, so chunks land in any order). */
  write(position: number, chunks: Uint8Array[]): Promise<void>;
  /** Makes chunks durable: the staged data is flushed first, then the journal records them and is flushed. */
  markDone(indices: readonly number[]): Promise<void>;
  /**
   * Flushes what was written so far without recording anything, so the disk writes back during
   * the download rather than all at the end.
   */
  flush(): Promise<void>;
  /** Forgets chunks the journal held (found bad when read back). */
  unmark(indices: readonly number[]): Promise<void>;
  close(): Promise<void>;
}

/** The model store's staging for chunked downloads: a preallocated file and its journal. */
export interface ChunkStaging {
  /** Opens (or resumes, when the journal matches `layout`) the staged file of a blob. */
  openChunked(sha256: string, layout: ChunkLayout): Promise<ChunkedPart>;
  discardChunked(sha256: string): Promise<void>;
  /** Disk space the staged file of a blob already takes (it is sparse until every chunk is written). */
  chunkedBytes(sha256: string): Promise<number>;
  /** Moves a verified staged file into the store in one rename and drops its journal and kept chunk list. */
  commitChunked(sha256: string): Promise<void>;
  /**
   * Keeps the chunk list of a blob being staged, so that a restart resumes the download while
   * the origin is down (the mirrors may not be). It is verified again whenever it is used.
   */
  keepChunkList(sha256: string, list: Uint8Array): Promise<void>;
  /** The chunk list kept for a blob, or null when there is none or it is not a file of at most `maxBytes`. */
  keptChunkList(sha256: string, maxBytes: number): Promise<Uint8Array | null>;
}

/**
 * What a chunked download needs (SPEC §3 `models[].chunks`). Without it, chunk lists are
 * ignored and every model comes down as one stream, which the SPEC allows.
 */
export interface ChunkPorts {
  lists: ChunkListSource;
  staging: ChunkStaging;
  /** Ranged requests in flight for one model, spread over its mirrors; default 8. */
  connections?: number;
  /**
   * The most one ranged request asks for, default 8 MiB: a chunk larger than this is fetched as
   * several pieces on several connections at once, so the download moves through the file in
   * order and the whole-file hash keeps up with it.
   */
  pieceBytes?: number;
}

/** Where the participation flags are kept (the Agent's runtime reads them). */
export interface FlagsStore {
  read(): Promise<ParticipationFlags | null>;
  write(flags: ParticipationFlags | null): Promise<void>;
}

/** Time as data: the executor's waits and timeouts go through this (from @resultity/node-kit). */
export type { Clock };

/** Everything `execute` touches, injected. */
export interface ApplierPorts {
  engine: ContainerEngine;
  models: ModelStore;
  downloader: Downloader;
  flags: FlagsStore;
  clock: Clock;
  /** Chunked downloads; absent, models with `chunks` come down as one stream. */
  chunks?: ChunkPorts;
}
