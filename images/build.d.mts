/** What `buildExampleRuntimeImage` built and pushed. */
export interface BuiltImage {
  /** registry/resultity/example-runtime */
  image: string;
  tag: string;
  /** The runtime-bridge package version, also the OCI version label. */
  version: string;
  /** The registry digest (sha256:…) a snapshot names. */
  digest: string;
  /** The base image it was built on. */
  base: string;
}

/** Bundles the example runtime, builds its image on `base` (default: this machine's node, offline), tags, pushes. */
export function buildExampleRuntimeImage(options?: { registry?: string; tag?: string; base?: string; version?: string }): Promise<BuiltImage>;

/** Installs the packed Agent release with npm, builds its image on `base`, tags, pushes. */
export function buildAgentImage(options?: { registry?: string; tag?: string; base?: string; version?: string }): Promise<BuiltImage>;
