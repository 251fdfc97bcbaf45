import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { SnapshotSchema, type Model } from '@resultity/snapshot';
import { sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import {
  ApplyError,
  FsModelStore,
  HttpDownloader,
  createDefaultPorts,
  desiredStateFrom,
  execute,
  executeCollection,
  fetchModel,
  planCollection,
  modelPath,
  plan,
  readCurrentState,
  systemClock,
  type ApplierPolicy,
  type ApplierPorts,
} from '../src/index.js';
import { generatedBytes, sha256, startModelServer, type ModelServer } from './support/model-server.js';

const policy: ApplierPolicy = { allowedRegistries: ['127.0.0.1:5000'], labelPrefix: `io.resultity.models-test-${process.pid}` };
const profile = { vram_gb: 24, regions: ['eu'], gpu: [] };

let server: ModelServer;
let dir: { path: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  server = await startModelServer();
});
afterAll(async () => {
  await server.close();
});
beforeEach(async () => {
  dir = await tempDir('resultity-applier-models-');
});
afterEach(async () => {
  await dir.cleanup();
});

function modelOf(name: string, bytes: Buffer, path = `/${name}.bin`): Model {
  server.serve(path, { bytes });
  return { name, version: '1.0.0', sha256: sha256(bytes), size: bytes.length, urls: [server.url(path)] };
}

function storeIn(root: string) {
  return { models: new FsModelStore(root), downloader: new HttpDownloader({ idleTimeoutMs: 5000, allowPrivateAddresses: true }), clock: systemClock };
}

async function apply(ports: ApplierPorts, models: Model[], retainModels: Model[] = []) {
  const snapshot = SnapshotSchema.parse(sampleSnapshot({ models, runtime: { containers: [] } }));
  const desired = desiredStateFrom(snapshot, `sha256:${'0'.repeat(64)}`, profile);
  const steps = plan(await readCurrentState(ports, policy), desired, { policy, retainModels });
  return { steps, report: await execute(steps, ports, { policy }) };
}

async function rejection(promise: Promise<unknown>): Promise<ApplyError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ApplyError);
  return error as ApplyError;
}

describe('fetchModel', () => {
  it('streams a model into sha256/<hex> and reports progress up to its size', async () => {
    const bytes = generatedBytes(3 * 1024 * 1024 + 7, 11);
    const model = modelOf('plain', bytes);
    const progress: number[] = [];
    await fetchModel(model, storeIn(dir.path), { onProgress: (done) => progress.push(done) });
    expect(sha256(await readFile(join(dir.path, 'sha256', model.sha256)))).toBe(sha256(bytes));
    expect(progress.at(-1)).toBe(bytes.length);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(await readdir(join(dir.path, 'staging'))).toEqual([]);
  });

  it('resumes with a Range request after the connection is cut mid-body', async () => {
    const bytes = generatedBytes(2 * 1024 * 1024, 12);
    const model = modelOf('resumed', bytes);
    server.cut('/resumed.bin', 700_000);
    const before = server.requests.length;
    await fetchModel(model, storeIn(dir.path), { retryDelayMs: 10 });
    expect(sha256(await readFile(join(dir.path, 'sha256', model.sha256)))).toBe(sha256(bytes));
    const seen = server.requests.slice(before);
    expect(seen.length).toBe(2);
    expect(seen[0]!.range).toBeUndefined();
    expect(seen[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(Number(seen[1]!.range!.slice(6, -1))).toBeGreaterThan(0);
  });

  it('resumes a part left by an earlier, failed apply instead of starting over', async () => {
    const bytes = generatedBytes(1024 * 1024, 13);
    const model = modelOf('later', bytes);
    server.cut('/later.bin', 300_000, 1);
    const first = await rejection(fetchModel(model, storeIn(dir.path), { maxAttemptsPerUrl: 1 }));
    expect(first.code).toBe('DOWNLOAD_FAILED');
    expect((await readdir(join(dir.path, 'staging'))).length).toBe(1);
    const before = server.requests.length;
    await fetchModel(model, storeIn(dir.path));
    expect(server.requests.slice(before).map((r) => r.range)).toEqual(['bytes=300000-']);
    expect(sha256(await readFile(join(dir.path, 'sha256', model.sha256)))).toBe(sha256(bytes));
  });

  it('refuses bytes that hash to something else with HASH_MISMATCH and cleans the staging area', async () => {
    const bytes = generatedBytes(200_000, 14);
    const model = { ...modelOf('tampered', bytes), sha256: sha256(generatedBytes(200_000, 15)) };
    const error = await rejection(fetchModel(model, storeIn(dir.path)));
    expect(error.code).toBe('HASH_MISMATCH');
    expect(error.message).not.toContain(sha256(bytes));
    expect(error.mirrors).toEqual([{ index: 0, code: 'HASH_MISMATCH', detail: expect.stringContaining(sha256(bytes)) }]);
    expect(await readdir(join(dir.path, 'staging'))).toEqual([]);
    expect(existsSync(join(dir.path, 'sha256', model.sha256))).toBe(false);
  });

  it('refuses a file of another size with SIZE_MISMATCH before writing it', async () => {
    const bytes = generatedBytes(50_000, 16);
    const model = { ...modelOf('longer', bytes), size: 40_000 };
    const error = await rejection(fetchModel(model, storeIn(dir.path)));
    expect(error.code).toBe('SIZE_MISMATCH');
    expect(error.message).not.toMatch(/50000/);
    expect(error.mirrors?.[0]?.detail).toMatch(/expected 40000 bytes, the server has 50000/);
  });

  it('tries the next mirror when one does not have the file', async () => {
    const bytes = generatedBytes(10_000, 17);
    const model = modelOf('mirrored', bytes);
    const withMirror = { ...model, urls: [server.url('/missing.bin'), ...model.urls] };
    const report = await fetchModel(withMirror, storeIn(dir.path));
    expect(existsSync(modelPath(new FsModelStore(dir.path), model))).toBe(true);
    // The mirror given up on is reported even though the download succeeded.
    expect(report.dropped).toEqual([expect.objectContaining({ index: 0, code: 'MIRROR_HTTP_STATUS' })]);
  });

  it('stops with ABORTED when cancelled mid-download', async () => {
    const bytes = generatedBytes(100_000, 18);
    const model = modelOf('stalled', bytes);
    server.stall('/stalled.bin');
    const controller = new AbortController();
    const pending = fetchModel(model, storeIn(dir.path), { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    expect((await rejection(pending)).code).toBe('ABORTED');
  });
});

describe('collecting the store', () => {
  it('lists blobs and staged files with their sizes and removes only what no kept model references', async () => {
    const store = new FsModelStore(dir.path);
    const kept = modelOf('kept', generatedBytes(200_000, 31));
    const gone = modelOf('gone', generatedBytes(300_000, 32));
    await fetchModel(kept, storeIn(dir.path));
    await fetchModel(gone, storeIn(dir.path));
    // Leftovers of downloads that were interrupted: a kept model's part stays, an unwanted model's go.
    const stale = 'e'.repeat(64);
    await mkdir(join(dir.path, 'staging'), { recursive: true });
    await writeFile(join(dir.path, 'staging', `${stale}.chunked`), generatedBytes(40_000, 33));
    await writeFile(join(dir.path, 'staging', `${stale}.chunks`), Buffer.alloc(100));
    await writeFile(join(dir.path, 'staging', `${kept.sha256}.part`), Buffer.alloc(5000));
    await writeFile(join(dir.path, 'staging', 'not-ours.txt'), 'x');

    const inventory = await store.inventory();
    const plan = planCollection(inventory, [kept]);
    expect(plan.remove.map((f) => [f.kind, f.sha256])).toEqual(
      [
        ['blob', gone.sha256],
        ['chunked', stale],
        ['journal', stale],
      ].sort((a, b) => a[1]!.localeCompare(b[1]!)),
    );
    expect(plan.bytes).toBeGreaterThanOrEqual(300_000 + 40_000);
    const report = await executeCollection(plan, store);
    expect(report.bytesFreed).toBe(plan.bytes);
    expect(report.failed).toEqual([]);
    expect((await readdir(join(dir.path, 'sha256'))).sort()).toEqual([kept.sha256]);
    expect((await readdir(join(dir.path, 'staging'))).sort()).toEqual([`${kept.sha256}.part`, 'not-ours.txt'].sort());
  });
});

describe('a removal killed between its index write and its unlink', () => {
  it('leaves a file that the plan does not touch and the next collection removes', async () => {
    const ports = createDefaultPorts({ stateDir: dir.path, policy, downloads: { allowPrivateAddresses: true } });
    const a = modelOf('kill-a', generatedBytes(1000, 41));
    const b = modelOf('kill-b', generatedBytes(2000, 42));
    await apply(ports, [a, b]);
    // remove-model of b wrote the index without it, and the process died before the unlink.
    await ports.models.writeIndex((await ports.models.readIndex()).filter((e) => e.name !== 'kill-b'));
    const again = await apply(ports, [a]);
    expect(again.steps).toEqual([]);
    expect((await ports.models.listBlobs()).sort()).toEqual([a.sha256, b.sha256].sort());
    // What the Agent does after every successful apply, keeping the applied snapshot's models.
    const store = ports.models as FsModelStore;
    const report = await executeCollection(planCollection(await store.inventory(), [a]), store);
    expect(report.removed.map((f) => f.sha256)).toEqual([b.sha256]);
    expect(await ports.models.listBlobs()).toEqual([a.sha256]);
  });
});

describe('modelPath', () => {
  it('places a model under <stateDir>/models/sha256/<hex>', () => {
    expect(modelPath('/var/lib/resultity', { sha256: 'a'.repeat(64) })).toBe(`/var/lib/resultity/models/sha256/${'a'.repeat(64)}`);
  });

  it('refuses anything but a hex digest, so no path can escape the store', () => {
    for (const bad of ['../../etc/passwd', `${'a'.repeat(63)}/`, 'A'.repeat(64), '']) {
      expect(() => modelPath('/state', { sha256: bad })).toThrow(expect.objectContaining({ code: 'INVALID_STEP' }));
    }
  });
});

describe('applying models', () => {
  it('activates fetched models in the name@version index and removes what nobody needs', async () => {
    const ports = createDefaultPorts({ stateDir: dir.path, policy, downloads: { allowPrivateAddresses: true } });
    const a = modelOf('idx-a', generatedBytes(1000, 21));
    const b = modelOf('idx-b', generatedBytes(2000, 22));
    await apply(ports, [a, b]);
    expect((await ports.models.readIndex()).map((m) => m.name)).toEqual(['idx-a', 'idx-b']);

    const second = await apply(ports, [a, b]);
    expect(second.steps).toEqual([]);
    expect(second.report.mutatingCalls).toBe(0);

    await apply(ports, [a]);
    expect((await ports.models.readIndex()).map((m) => m.name)).toEqual(['idx-a']);
    expect(await ports.models.listBlobs()).toEqual([a.sha256]);
  });

  it('keeps the models of the previous applied snapshot', async () => {
    const ports = createDefaultPorts({ stateDir: dir.path, policy, downloads: { allowPrivateAddresses: true } });
    const a = modelOf('keep-a', generatedBytes(1000, 23));
    const b = modelOf('keep-b', generatedBytes(1000, 24));
    await apply(ports, [a]);
    await apply(ports, [b], [a]);
    expect(await ports.models.hasBlob(a.sha256)).toBe(true);
    expect((await ports.models.readIndex()).map((m) => m.name).sort()).toEqual(['keep-a', 'keep-b']);
  });
});

describe('a full disk', () => {
  const mounted = join('/tmp', `resultity-applier-tmpfs-${process.pid}`);

  beforeAll(async () => {
    await mkdir(mounted, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mounted]);
  });
  afterAll(() => {
    execFileSync('umount', [mounted]);
    execFileSync('rmdir', [mounted]);
  });

  it('refuses with INSUFFICIENT_SPACE before downloading, and loses nothing', async () => {
    const ports = createDefaultPorts({ stateDir: mounted, policy, downloads: { allowPrivateAddresses: true } });
    const small = modelOf('small', generatedBytes(100_000, 31));
    await apply(ports, [small]);
    const indexBefore = await readFile(join(mounted, 'models', 'index.json'), 'utf8');
    const flagsBefore = await readFile(join(mounted, 'flags.json'), 'utf8');

    const big = modelOf('big', generatedBytes(2 * 1024 * 1024, 32));
    const requestsBefore = server.requests.length;
    const error = await rejection(apply(ports, [small, big]));
    expect(error.code).toBe('INSUFFICIENT_SPACE');
    expect(error.rolledBack).toBe(false);
    expect(server.requests.length).toBe(requestsBefore);
    expect(await readFile(join(mounted, 'models', 'index.json'), 'utf8')).toBe(indexBefore);
    expect(await readFile(join(mounted, 'flags.json'), 'utf8')).toBe(flagsBefore);
    expect(sha256(await readFile(modelPath(mounted, small)))).toBe(sha256(generatedBytes(100_000, 31)));
    expect(await readdir(join(mounted, 'models', 'staging'))).toEqual([]);
  });

  it('counts every model of an apply together before fetching the first', async () => {
    const ports = createDefaultPorts({ stateDir: mounted, policy, downloads: { allowPrivateAddresses: true } });
    const one = modelOf('half-1', generatedBytes(600_000, 33));
    const two = modelOf('half-2', generatedBytes(600_000, 34));
    const requestsBefore = server.requests.length;
    expect((await rejection(apply(ports, [one, two]))).code).toBe('INSUFFICIENT_SPACE');
    expect(server.requests.length).toBe(requestsBefore);
    expect(await ports.models.hasBlob(one.sha256)).toBe(false);
  });
});
