import { describe, expect, it } from 'vitest';

import { type HostPathPorts, assertPathsShared, parseMountinfo, sharedPathProblem } from './host-paths.js';

// Lines as a Docker container's /proc/self/mountinfo shows them.
const ROOT = '1501 1422 0:300 / / rw,relatime master:590 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A';
const PROC = '1502 1501 0:303 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw';
const SAME = '1520 1501 8:1 /var/lib/resultity /var/lib/resultity rw,relatime - ext4 /dev/sda1 rw';
const OTHER = '1520 1501 8:1 /srv/agent-data /var/lib/resultity rw,relatime - ext4 /dev/sda1 rw';
const VOLUME = '1520 1501 8:1 /var/lib/docker/volumes/data/_data /var/lib/resultity rw,relatime - ext4 /dev/sda1 rw';
const SPACED = '1520 1501 8:1 /data/my\\040node /data/my\\040node rw,relatime - ext4 /dev/sda1 rw';

const mounts = (...lines: string[]) => parseMountinfo(lines.join('\n'));
const RUN = '/var/lib/resultity/run';
const MODELS = '/var/lib/resultity/models';

describe('parseMountinfo', () => {
  it('reads the root, mount point and type, unescaping octal escapes', () => {
    expect(mounts(ROOT, SPACED)).toEqual([
      { root: '/', mountPoint: '/', fstype: 'overlay' },
      { root: '/data/my node', mountPoint: '/data/my node', fstype: 'ext4' },
    ]);
  });

  it('skips lines that are not mount entries', () => {
    expect(mounts('', 'garbage', ROOT)).toHaveLength(1);
  });
});

describe('sharedPathProblem', () => {
  it('accepts a directory under a bind mount of the same host path', () => {
    expect(sharedPathProblem(RUN, mounts(ROOT, PROC, SAME))).toBeNull();
    expect(sharedPathProblem('/data/my node/models', mounts(ROOT, SPACED))).toBeNull();
  });

  it("refuses a directory on the container's own filesystem", () => {
    expect(sharedPathProblem(MODELS, mounts(ROOT, PROC))).toMatch(/found it on the container's own filesystem$/);
  });

  it('refuses a bind mount of another host path, and a named volume', () => {
    expect(sharedPathProblem(MODELS, mounts(ROOT, OTHER))).toContain('which is /srv/agent-data/models on its filesystem');
    expect(sharedPathProblem(MODELS, mounts(ROOT, VOLUME))).toContain('/var/lib/docker/volumes/data/_data');
  });

  it('judges by the deepest mount covering the path, the last one when mounted twice', () => {
    const deeper = '1530 1520 8:1 /elsewhere /var/lib/resultity/models rw - ext4 /dev/sda1 rw';
    expect(sharedPathProblem(RUN, mounts(ROOT, SAME, deeper))).toBeNull();
    expect(sharedPathProblem(MODELS, mounts(ROOT, SAME, deeper))).toContain('from /elsewhere');
    expect(sharedPathProblem(MODELS, mounts(ROOT, OTHER, SAME))).toBeNull();
    expect(sharedPathProblem(MODELS, mounts(ROOT, SAME, OTHER))).not.toBeNull();
  });

  it('does not take a sibling with a common prefix for a parent', () => {
    const sibling = '1520 1501 8:1 /var/lib/resultity-old /var/lib/resultity-old rw - ext4 /dev/sda1 rw';
    expect(sharedPathProblem(MODELS, mounts(ROOT, sibling))).toMatch(/own filesystem$/);
  });
});

describe('assertPathsShared', () => {
  const ports = (where: { inContainer: boolean; engineSharesMounts?: boolean }, ...lines: string[]): HostPathPorts => ({
    inContainer: async () => where.inContainer,
    engineSharesMounts: async () => where.engineSharesMounts ?? false,
    readMountinfo: async () => lines.join('\n'),
  });

  it('refuses with PATHS_NOT_SHARED in a container whose data directory is not the host path', async () => {
    await expect(assertPathsShared('/var/lib/resultity', [RUN, MODELS], 'auto', ports({ inContainer: true }, ROOT, OTHER))).rejects.toMatchObject({
      code: 'PATHS_NOT_SHARED',
      message: expect.stringContaining('-v /var/lib/resultity:/var/lib/resultity'),
    });
  });

  it('passes in a container with the data directory at the same path', async () => {
    await expect(assertPathsShared('/var/lib/resultity', [RUN, MODELS], 'auto', ports({ inContainer: true }, ROOT, SAME))).resolves.toBeUndefined();
  });

  it('does not check outside a container, with the engine in the same container, or when told not to', async () => {
    await expect(assertPathsShared('/var/lib/resultity', [RUN], 'auto', ports({ inContainer: false }, ROOT))).resolves.toBeUndefined();
    await expect(assertPathsShared('/var/lib/resultity', [RUN], 'auto', ports({ inContainer: true, engineSharesMounts: true }, ROOT))).resolves.toBeUndefined();
    await expect(assertPathsShared('/var/lib/resultity', [RUN], 'never', ports({ inContainer: true }, ROOT))).resolves.toBeUndefined();
  });
});
