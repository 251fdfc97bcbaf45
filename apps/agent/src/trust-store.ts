import { type TrustedRoot, envelopePayload, parseCanonical, parseEnvelope, rotateRoot, walkRootChain } from '@resultity/snapshot';

import type { AuditSink } from './audit.js';

/** Where learned roots are kept, and where the next one is asked for. */
export interface TrustStorePorts {
  /** The provisioned root envelopes from the configuration, oldest first. */
  readonly provisioned: readonly Uint8Array[];
  /** Root envelopes learned before, in version order. */
  cachedRoots(): Promise<readonly Uint8Array[]>;
  putRoot(version: number, bytes: Uint8Array): Promise<void>;
  /** The origin's root of a version, or null when it has none (the chain ends). */
  fetchRoot(version: number, signal?: AbortSignal): Promise<Uint8Array | null>;
  readonly audit: AuditSink;
  readonly onBytes?: (bytes: number) => void;
}

/**
 * The trusted root (SPEC §4): the provisioned chain, the rotations learned before, and any
 * the origin now has, each step checked by the snapshot package. It only holds and extends
 * the trusted set; what is verified against it is the engine's business.
 */
export class TrustStore {
  private root: TrustedRoot | null = null;

  constructor(private readonly ports: TrustStorePorts) {}

  /** The newest root known without asking the origin. */
  async current(): Promise<TrustedRoot> {
    if (this.root !== null) return this.root;
    let root = walkRootChain(this.ports.provisioned);
    for (const bytes of await this.ports.cachedRoots()) {
      // Cached roots are checked again like any rotation: the state directory is not a signer.
      if (rootVersion(bytes) === root.root.version + 1) root = rotateRoot(root, bytes);
    }
    this.root = root;
    return root;
  }

  /** Walks the origin's chain N+1, N+2, … and persists each accepted step before trusting the next. */
  async refresh(signal?: AbortSignal): Promise<TrustedRoot> {
    let root = await this.current();
    for (;;) {
      const next = await this.ports.fetchRoot(root.root.version + 1, signal);
      if (next === null) return root;
      this.ports.onBytes?.(next.byteLength);
      const rotated = rotateRoot(root, next);
      await this.ports.putRoot(rotated.root.version, next);
      await this.ports.audit.append('root-rotated', { from: root.root.version, to: rotated.root.version });
      this.root = rotated;
      root = rotated;
    }
  }
}

function rootVersion(bytes: Uint8Array): number | null {
  try {
    const value = parseCanonical(envelopePayload(parseEnvelope(bytes)), 'root') as { version?: unknown };
    return typeof value.version === 'number' ? value.version : null;
  } catch {
    return null;
  }
}
