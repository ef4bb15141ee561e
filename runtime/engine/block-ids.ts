/**
 * The ids of a disk's blocks, as a block map records them: the keyed id of each blockSize piece of
 * a read (the last piece may be shorter), ID_BYTES each, back to back, and all zeros (ZERO_ID) for
 * a piece of zeros, which is a hole and not stored. Computed on the codec pool's threads
 * (CodecPool.hashBlocks): hashing every byte read is a backup's largest cost on the thread that
 * reads, deduplicates and packs.
 */
import { ID_BYTES, keyedId, type SecretKey } from "./crypto.ts";

let zeros = new Uint8Array(0);

export function blockIds(idKey: SecretKey, buffer: Uint8Array, blockSize: number): Uint8Array {
  if (zeros.length < blockSize) zeros = new Uint8Array(blockSize);
  const count = Math.ceil(buffer.length / blockSize);
  // Its own ArrayBuffer (never Node's shared pool), so it can be handed between threads.
  const ids = new Uint8Array(count * ID_BYTES);
  for (let i = 0; i < count; i++) {
    const piece = buffer.subarray(i * blockSize, Math.min((i + 1) * blockSize, buffer.length));
    if (Buffer.compare(piece, zeros.subarray(0, piece.length)) === 0) continue;
    ids.set(keyedId(idKey, piece), i * ID_BYTES);
  }
  return ids;
}
