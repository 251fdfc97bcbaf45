import { describe, expect, it } from 'vitest';

import { decideSelfUpdate } from './self-update.js';

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const update = { version: '1.3.0', image: 'registry.example/resultity/agent', digest: digest('b') };

describe('decideSelfUpdate', () => {
  it('does nothing when the running image is the target, whatever the versions say', () => {
    expect(decideSelfUpdate(update, [digest('a'), digest('b')], 'registry.example', ['registry.example'], {}, 3)).toEqual({ kind: 'current' });
  });

  it('refuses an image from a registry that is not allowed', () => {
    expect(decideSelfUpdate(update, [digest('a')], 'registry.example', ['other.example'], {}, 3)).toEqual({
      kind: 'not-allowed',
      registry: 'registry.example',
    });
  });

  it('tries a new digest by digest, counting the attempt', () => {
    expect(decideSelfUpdate(update, [digest('a')], 'registry.example', ['REGISTRY.example'], { [digest('b')]: 1 }, 3)).toEqual({
      kind: 'try',
      ref: `registry.example/resultity/agent@${digest('b')}`,
      attempt: 2,
    });
  });

  it('stops once the digest has failed retry_budget times', () => {
    expect(decideSelfUpdate(update, [digest('a')], 'registry.example', ['registry.example'], { [digest('b')]: 3 }, 3)).toEqual({
      kind: 'budget-exhausted',
      attempts: 3,
    });
  });
});
