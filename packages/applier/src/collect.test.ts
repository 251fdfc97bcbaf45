import { describe, expect, it } from 'vitest';

import { type CollectableStore, type StoreFile, executeCollection, planCollection } from './collect.js';

const hex = (c: string) => c.repeat(64);
const entry = (c: string) => ({ name: `m-${c}`, version: '1', sha256: hex(c), size: 10 });

describe('planCollection', () => {
  const files: StoreFile[] = [
    { kind: 'blob', sha256: hex('a'), bytes: 100 },
    { kind: 'blob', sha256: hex('b'), bytes: 200 },
    { kind: 'blob', sha256: hex('c'), bytes: 300 },
    { kind: 'chunked', sha256: hex('d'), bytes: 40 },
    { kind: 'journal', sha256: hex('d'), bytes: 1 },
    { kind: 'part', sha256: hex('e'), bytes: 7 },
  ];

  it('removes blobs and staged files that neither a kept snapshot nor the index references', () => {
    const plan = planCollection({ index: [entry('a')], files }, [{ sha256: hex('b') }]);
    expect(plan.remove.map((f) => `${f.kind}:${f.sha256[0]}`)).toEqual(['blob:c', 'chunked:d', 'journal:d', 'part:e']);
    expect(plan.bytes).toBe(300 + 40 + 1 + 7);
    expect(plan.storeBytes).toBe(648);
  });

  it('removes a file a removal killed between its index write and its unlink left: no entry names it, no kept snapshot wants it', () => {
    // The index already says `b` is gone; its file is still there.
    const plan = planCollection({ index: [entry('a')], files: files.slice(0, 2) }, [{ sha256: hex('a') }]);
    expect(plan.remove).toEqual([{ kind: 'blob', sha256: hex('b'), bytes: 200 }]);
  });

  it('keeps the staged files of a kept model, so its download resumes', () => {
    const plan = planCollection({ index: [], files }, [
      { sha256: hex('a') },
      { sha256: hex('b') },
      { sha256: hex('c') },
      { sha256: hex('d') },
      { sha256: hex('e') },
    ]);
    expect(plan.remove).toEqual([]);
    expect(plan.bytes).toBe(0);
  });

  it('keeps a blob the index still names, even when no kept snapshot lists it (a container may have it open)', () => {
    const plan = planCollection({ index: [entry('c')], files: files.slice(0, 3) }, [{ sha256: hex('a') }]);
    expect(plan.remove.map((f) => f.sha256)).toEqual([hex('b')]);
  });
});

describe('executeCollection', () => {
  it('reports a file it could not remove instead of throwing, and counts only what was freed', async () => {
    const removed: string[] = [];
    const store = {
      inventory: async () => ({ index: [], files: [] }),
      removeFile: async (f) => {
        if (f.sha256 === hex('b')) throw new Error('EBUSY');
        removed.push(f.sha256);
      },
    } satisfies CollectableStore;
    const report = await executeCollection(
      {
        remove: [
          { kind: 'blob', sha256: hex('a'), bytes: 5 },
          { kind: 'blob', sha256: hex('b'), bytes: 9 },
        ],
        bytes: 14,
        storeBytes: 14,
      },
      store,
    );
    expect(removed).toEqual([hex('a')]);
    expect(report.bytesFreed).toBe(5);
    expect(report.failed).toEqual([{ file: { kind: 'blob', sha256: hex('b'), bytes: 9 }, message: 'EBUSY' }]);
  });
});
