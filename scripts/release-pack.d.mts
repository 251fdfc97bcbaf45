/** One package `releasePack` packed. */
export interface PackedPackage {
  name: string;
  version: string;
  /** Absolute path of the tarball. */
  file: string;
}

/** Packs every publishable workspace package into `out` (refusing one that depends on a private package). */
export function releasePack(options?: { out?: string }): Promise<PackedPackage[]>;
