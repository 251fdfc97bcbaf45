import type { ContainerSpec } from '@resultity/snapshot';
import { describe, expect, it } from 'vitest';

import { withRuntimeUpdate } from './runtime-update.js';

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const container = (name: string, image: string, d: string): ContainerSpec => ({
  name,
  image,
  tag: '1.0.0',
  digest: d,
  env: {},
  command: [],
  ports: [],
  restart: 'always',
  bridge: false,
  models: false,
});

describe('withRuntimeUpdate', () => {
  const containers = [container('inference', 'registry.example/resultity/runtime', digest('a')), container('sidecar', 'registry.example/other', digest('b'))];

  it('moves the container that runs the update image to its digest and version, and no other', () => {
    const updated = withRuntimeUpdate(containers, { version: '1.1.0', image: 'registry.example/resultity/runtime', digest: digest('c') });
    expect(updated).toEqual([{ ...containers[0], tag: '1.1.0', digest: digest('c') }, containers[1]]);
  });

  it('changes nothing without an update, or with one for an image no container runs', () => {
    expect(withRuntimeUpdate(containers, undefined)).toEqual(containers);
    expect(withRuntimeUpdate(containers, { version: '2.0.0', image: 'registry.example/resultity/elsewhere', digest: digest('d') })).toEqual(containers);
  });
});
