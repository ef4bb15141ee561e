/** Test data shared by the harnesses. */

/** Deterministic, incompressible bytes (xorshift32 from a seed). */
export function pattern(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out.writeUInt32LE(state >>> 0, i);
  }
  return out;
}
