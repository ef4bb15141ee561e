/** Backs up a byte stream (a file, a BACPAC) through content-defined chunking. */
import type { Readable } from "node:stream";
import { CHUNK_DATA, CHUNK_TREE } from "./chunk-codec.ts";
import { Chunker } from "./chunker.ts";
import { keyedId, secretKey, ID_BYTES } from "./crypto.ts";
import { ENTRIES_PER_NODE, STREAM_TREE_ENTRY, type StreamLayout } from "./point.ts";
import type { Vault } from "./vault.ts";
import type { VaultWriter } from "./vault-writer.ts";

export async function backupStream(
  vault: Vault,
  writer: VaultWriter,
  input: AsyncIterable<Uint8Array> | Readable,
  options: { onProgress?: (bytesDone: number) => void } = {},
): Promise<{ content: StreamLayout; bytesRead: number }> {
  const chunker = new Chunker(vault.master.idKey, vault.config.chunker);
  const idKey = secretKey(vault.master.idKey);
  const tree: string[] = [];
  let node = Buffer.alloc(ENTRIES_PER_NODE * STREAM_TREE_ENTRY);
  let entries = 0;
  let bytesRead = 0;
  let buffered: Buffer = Buffer.alloc(0);

  const flushNode = async () => {
    if (entries === 0) return;
    const bytes = node.subarray(0, entries * STREAM_TREE_ENTRY);
    const id = keyedId(idKey, bytes);
    await writer.put(CHUNK_TREE, id, Buffer.from(bytes));
    tree.push(id.toString("hex"));
    entries = 0;
  };
  const emit = async (chunk: Buffer) => {
    const id = keyedId(idKey, chunk);
    await writer.put(CHUNK_DATA, id, chunk);
    id.copy(node, entries * STREAM_TREE_ENTRY);
    node.writeUInt32LE(chunk.length, entries * STREAM_TREE_ENTRY + ID_BYTES);
    if (++entries === ENTRIES_PER_NODE) await flushNode();
  };
  const cut = async (final: boolean) => {
    let at = 0;
    for (;;) {
      const length = chunker.next(buffered.subarray(at), final);
      if (length === 0) break;
      // Copy so the chunk does not pin the whole read buffer while it waits to be encoded.
      await emit(Buffer.from(buffered.subarray(at, at + length)));
      at += length;
      if (at === buffered.length) break;
    }
    buffered = buffered.subarray(at);
  };

  // Gather pieces until there is enough to cut, then join them once (not on every piece).
  let pieces: Uint8Array[] = [];
  let piecesBytes = 0;
  const join = () => {
    if (pieces.length > 0) buffered = Buffer.concat([buffered, ...pieces]);
    pieces = [];
    piecesBytes = 0;
  };
  for await (const piece of input) {
    bytesRead += piece.length;
    pieces.push(piece);
    piecesBytes += piece.length;
    if (buffered.length + piecesBytes >= vault.config.chunker.max * 2) {
      join();
      await cut(false);
    }
    options.onProgress?.(bytesRead);
  }
  join();
  await cut(true);
  await flushNode();
  return { content: { layout: "stream", tree }, bytesRead };
}
