import type { ModelIndexEntry } from './ports.js';

/** A file of the model store that collection may remove: a blob, or what a download left in staging. */
export interface StoreFile {
  /** `blob` is `sha256/<hex>`; `part`, `chunked`, `journal`, `list` are `staging/<hex>.part|.chunked|.chunks|.list`. */
  kind: 'blob' | 'part' | 'chunked' | 'journal' | 'list';
  sha256: string;
  /** Disk space it takes (allocated blocks: a chunked staged file is sparse). */
  bytes: number;
}

/** What is on disk in the store, as collection sees it. */
export interface StoreInventory {
  index: ModelIndexEntry[];
  files: StoreFile[];
}

/** The store port's side of collection: list what is there, and remove one file. */
export interface CollectableStore {
  inventory(): Promise<StoreInventory>;
  /** Removes one file of the inventory; a file already gone is not an error. */
  removeFile(file: Pick<StoreFile, 'kind' | 'sha256'>): Promise<void>;
}

/** A model a kept snapshot references: only its digest decides. */
export interface KeptModel {
  sha256: string;
}

/** What collection removes and what stays, with the bytes of each. */
export interface CollectionPlan {
  remove: StoreFile[];
  bytes: number;
  /** Bytes of every file in the store, kept or not. */
  storeBytes: number;
}

/**
 * Which store files no kept snapshot needs. `keep` is every model of the snapshots the node may
 * run again without a download: the applied one, the last-known-good, a pinned rollback target.
 * The model index is kept too: a blob it points at is one a running container may have open
 * through the models mount under its name@version, and the index only ever holds models of the
 * applied snapshot or the ones `plan` retained. Staged files (a download's part, chunked file,
 * journal and kept chunk list) of a kept model stay, so a later apply resumes rather than starts over. Pure.
 */
export function planCollection(inventory: StoreInventory, keep: readonly KeptModel[]): CollectionPlan {
  const wanted = new Set([...keep.map((m) => m.sha256), ...inventory.index.map((e) => e.sha256)]);
  const remove = inventory.files
    .filter((f) => !wanted.has(f.sha256))
    .sort((a, b) => (a.sha256 === b.sha256 ? a.kind.localeCompare(b.kind) : a.sha256.localeCompare(b.sha256)));
  return {
    remove,
    bytes: remove.reduce((n, f) => n + f.bytes, 0),
    storeBytes: inventory.files.reduce((n, f) => n + f.bytes, 0),
  };
}

/** What a collection removed, for the audit log. */
export interface CollectionReport {
  removed: StoreFile[];
  bytesFreed: number;
  /** Files that could not be removed, with why; they are tried again at the next collection. */
  failed: { file: StoreFile; message: string }[];
}

/**
 * Removes what `planCollection` chose, one file at a time. A file that cannot be removed is
 * reported, not thrown: a collection never turns a successful apply into a failed one.
 */
export async function executeCollection(plan: CollectionPlan, store: CollectableStore): Promise<CollectionReport> {
  const removed: StoreFile[] = [];
  const failed: CollectionReport['failed'] = [];
  for (const file of plan.remove) {
    try {
      await store.removeFile(file);
      removed.push(file);
    } catch (error) {
      failed.push({ file, message: error instanceof Error ? error.message : String(error) });
    }
  }
  return { removed, bytesFreed: removed.reduce((n, f) => n + f.bytes, 0), failed };
}
