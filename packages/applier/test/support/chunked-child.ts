// A download in a process of its own, so a test can kill -9 it halfway: argv[2] is a JSON of
// { model, root, origin, connections }. Prints each progress figure on a line of its own.
import { FsModelStore, HttpDownloader, fetchChunked, systemClock } from '../../src/index.js';
import { chunkPorts } from './chunked-model.js';
import type { RangeMirror } from './range-mirror.js';

const input = JSON.parse(process.argv[2] ?? '{}');
const models = new FsModelStore(input.root);
const downloader = new HttpDownloader({ allowPrivateAddresses: true });
// Only url() of the origin is used by the chunk list source.
const origin = { url: (path: string) => `${input.origin}${path}` } as RangeMirror;
await fetchChunked(
  input.model,
  { models, downloader, clock: systemClock, chunks: chunkPorts(origin, downloader, models, input.connections) },
  {
    onProgress: (done) => process.stdout.write(`${done}\n`),
  },
);
process.stdout.write('finished\n');
