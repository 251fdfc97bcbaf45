import type { Participation } from '@resultity/snapshot';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { evaluateParticipation } from './participation.js';

const profile = { vram_gb: 24, regions: ['eu', 'us'], gpu: ['rtx-4090'] };

function participation(subclouds: Participation['subclouds'], mode: Participation['mode'] = 'testnet'): Participation {
  return { mode, subclouds };
}

describe('evaluateParticipation', () => {
  it('keeps the mode and lists the subclouds whose every requirement the node meets', () => {
    const flags = evaluateParticipation(
      participation(
        [
          { id: 'eu-gpu', require: { min_vram_gb: 24, regions: ['eu'] } },
          { id: 'big', require: { min_vram_gb: 80 } },
          { id: 'asia', require: { regions: ['ap'] } },
          { id: 'ada', require: { gpus: ['RTX-4090', 'l40s'] } },
          { id: 'anyone', require: {} },
        ],
        'mainnet',
      ),
      profile,
    );
    expect(flags).toEqual({ mode: 'mainnet', subclouds: ['eu-gpu', 'ada', 'anyone'] });
  });

  it('refuses a subcloud that has a requirement this code does not know', () => {
    const flags = evaluateParticipation(participation([{ id: 'x', require: { min_vram_gb: 1, tpm: true } as never }]), profile);
    expect(flags.subclouds).toEqual([]);
  });

  it('refuses a subcloud whose region or gpu list is empty', () => {
    const flags = evaluateParticipation(
      participation([
        { id: 'r', require: { regions: [] } },
        { id: 'g', require: { gpus: [] } },
      ]),
      profile,
    );
    expect(flags.subclouds).toEqual([]);
  });

  it('never qualifies a node with less memory than a subcloud asks for', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1000, noNaN: true }), fc.double({ min: 0, max: 1000, noNaN: true }), (have, want) => {
        const flags = evaluateParticipation(participation([{ id: 's', require: { min_vram_gb: want } }]), { ...profile, vram_gb: have });
        expect(flags.subclouds.includes('s')).toBe(have >= want);
      }),
    );
  });
});
