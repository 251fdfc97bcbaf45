import { ApplyError } from './errors.js';
import type { ChunkListSource, Downloader } from './ports.js';

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The default ChunkListSource: `GET {origin}/v1/{network}/chunks/{hex}.json` (SPEC §5) through
 * the model downloader, so the list is fetched under the same rules as a mirror (confined
 * addresses and redirects, idle timeout, minimum rate), and read no further than the length a
 * canonical list of that many chunks has.
 */
export class OriginChunkLists implements ChunkListSource {
  constructor(
    private readonly origin: string,
    private readonly network: string,
    private readonly downloader: Downloader,
  ) {}

  async fetch(hex: string, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
    // Only a validated digest becomes part of a URL.
    if (!HEX64.test(hex))
      throw new ApplyError('CHUNK_LIST_INVALID', `expected a chunk list digest of 64 lowercase hex digits, found ${JSON.stringify(hex.slice(0, 80))}`);
    const base = this.origin.endsWith('/') ? this.origin : `${this.origin}/`;
    const url = new URL(`v1/${encodeURIComponent(this.network)}/chunks/${hex}.json`, base).toString();
    const response = await this.downloader.open(url, { offset: 0, ...(signal ? { signal } : {}) });
    const parts: Uint8Array[] = [];
    let length = 0;
    try {
      for await (const part of response.body) {
        length += part.length;
        if (length > maxBytes) throw new ApplyError('CHUNK_LIST_UNAVAILABLE', `the chunk list ${hex} is longer than the ${maxBytes} bytes its model allows`);
        parts.push(part);
      }
    } finally {
      response.body.destroy?.();
    }
    return Buffer.concat(parts, length);
  }
}
