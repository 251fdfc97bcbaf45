// What both kill campaigns (chaos.ts, handover.ts) share: a seeded random sequence, so a
// printed seed reproduces a run, a timestamped log line, and a poll fine enough to aim a kill.

/** mulberry32: small, seedable, and the same sequence on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed's random sequence and a picker drawing from it. */
export function seeded(seed: number): { random: () => number; pick: <T>(items: readonly T[]) => T } {
  const random = prng(seed);
  return { random, pick: <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const log = (...parts: unknown[]) => console.log(new Date().toISOString().slice(11, 19), ...parts);

/**
 * Polls `probe` every `every` ms (a few ms where a kill is aimed at a short window) until it
 * gives a truthy value; a probe that throws counts as "not yet".
 */
export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, ms: number, every = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}
