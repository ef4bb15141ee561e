/**
 * The tree point's format in-process (engine/backup-tree.ts, tree-entries.ts, items/fs/tree.ts),
 * in a vault made with small chunks (1-16 KiB) so a 24 MiB file has thousands of chunks: a file
 * of more than 64 chunks is listed through content-tree chunks (4096 chunks each), a smaller one
 * inline, and both read back equal; 3000 names in one folder span several entry chunks and list whole, as do folders
 * whose names sort around "/" ("a", "a-x", "a.txt"); an unchanged second backup reads nothing and
 * takes every file's content (content trees included) from the first; a folder named through a
 * symlink is the folder it leads to; entry chunks that are not
 * JSON, out of order or carry bad fields are IntegrityErrors naming the chunk.
 */
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { backupTree } from "../../runtime/engine/backup-tree.ts";
import type { PointManifest, TreeLayout } from "../../runtime/engine/point.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { comparePaths, decodeEntries, decodeIndex, encodeLine, type TreeEntry } from "../../runtime/engine/tree-entries.ts";
import { TreeEntriesReader } from "../../runtime/engine/tree-reader.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { IntegrityError } from "../../runtime/errors.ts";
import { TreeFileSystem } from "../../runtime/items/fs/tree.ts";
import type { FsNode } from "../../runtime/items/fs/types.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { MIB, pseudoRandom, tempFolder } from "../cli/vaults.ts";

const SMALL_CHUNKS = { min: 1024, avg: 4096, max: 16384 };

async function contentOf(fs: TreeFileSystem, node: FsNode): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const run of fs.read(node)) parts.push(run.hole ? Buffer.alloc(run.length) : run.data);
  return Buffer.concat(parts);
}

async function child(fs: TreeFileSystem, dir: FsNode, name: string): Promise<FsNode> {
  const found = (await fs.list(dir)).find((e) => e.name === name);
  if (!found) throw new Error(`${name} is not listed`);
  return found.node;
}

async function entriesOf(vault: Vault, point: PointManifest): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  for await (const entry of new TreeEntriesReader(vault, point.content as TreeLayout).all()) out.push(entry);
  return out;
}

describe("tree points in a vault of small chunks", () => {
  let top: string;
  let vault: Vault;
  let first: PointManifest;

  beforeAll(async () => {
    const work = await tempFolder("tree-format");
    top = path.join(work, "top");
    for (const dir of ["a/b", "a-x", "many", "zz"]) await mkdir(path.join(top, dir), { recursive: true });
    await writeFile(path.join(top, "long.bin"), pseudoRandom("long", 24 * MIB));
    await writeFile(path.join(top, "mid.bin"), pseudoRandom("mid", 100 * 1024));
    await writeFile(path.join(top, "a.txt"), "a.txt\n");
    await writeFile(path.join(top, "a/b/inner.txt"), "inner\n");
    await writeFile(path.join(top, "a-x/dash.txt"), "dash\n");
    await writeFile(path.join(top, "zz/last.txt"), "last\n");
    for (let i = 0; i < 3000; i++) await writeFile(path.join(top, "many", `name-${String(i).padStart(5, "0")}`), "");
    const store = new LocalFolderStore(path.join(work, "vault"));
    await mkdir(store.location);
    await Vault.init(store, new PassphraseProvider(PASSPHRASE), { chunker: SMALL_CHUNKS });
    vault = await Vault.open(store, new PassphraseProvider(PASSPHRASE));
    first = (await backupTree(vault, top, { kind: "tree", source: { type: "folder", path: top } })).point;
  });

  test("a file of more than 64 chunks is listed through content-tree chunks, a smaller one inline; both read back equal", async () => {
    const entries = await entriesOf(vault, first);
    const long = entries.find((e) => e.name === "long.bin")!;
    const mid = entries.find((e) => e.name === "mid.bin")!;
    expect(long.chunks).toBeUndefined();
    // Over 4096 chunks: two content-tree chunks.
    expect(long.contentTree?.length).toBe(2);
    expect(mid.contentTree).toBeUndefined();
    expect(mid.chunks!.length).toBeGreaterThan(5);
    const fs = new TreeFileSystem(vault, first.content as TreeLayout);
    const root = await fs.root();
    expect(await contentOf(fs, await child(fs, root, "long.bin"))).toEqual(await readFile(path.join(top, "long.bin")));
    expect(await contentOf(fs, await child(fs, root, "mid.bin"))).toEqual(await readFile(path.join(top, "mid.bin")));
  });

  test("3000 names in one folder span several entry chunks and list whole; folders sorting around '/' list their own children", async () => {
    const layout = first.content as TreeLayout;
    const fs = new TreeFileSystem(vault, layout);
    const root = await fs.root();
    expect((await fs.list(root)).map((e) => e.name)).toEqual(["a", "a-x", "a.txt", "long.bin", "many", "mid.bin", "zz"]);
    const many = await fs.list(await child(fs, root, "many"));
    expect(many.length).toBe(3000);
    expect(many[0].name).toBe("name-00000");
    expect(many[2999].name).toBe("name-02999");
    const a = await child(fs, root, "a");
    expect((await fs.list(a)).map((e) => e.name)).toEqual(["b"]);
    expect((await fs.list(await child(fs, a, "b"))).map((e) => e.name)).toEqual(["inner.txt"]);
    expect((await fs.list(await child(fs, root, "a-x"))).map((e) => e.name)).toEqual(["dash.txt"]);
    expect((await fs.list(await child(fs, root, "zz"))).map((e) => e.name)).toEqual(["last.txt"]);
    // Several entry chunks: the index names more than one.
    const index = decodeIndex(await vault.readChunk(CHUNK_TREE, Buffer.from(layout.index[0], "hex")), Buffer.from(layout.index[0], "hex"));
    expect(index.length).toBeGreaterThan(2);
    expect(comparePaths("a/b", "a-x")).toBeLessThan(0);
    expect(comparePaths("a", "a/b")).toBeLessThan(0);
  });

  test("an unchanged second backup reads no file and takes every content, content trees included, from the first", async () => {
    const { point, report } = await backupTree(vault, top, { kind: "tree", source: { type: "folder", path: top } });
    expect(report.filesRead).toBe(0);
    expect(report.filesUnchanged).toBe(report.files);
    expect(point.stats.bytesRead).toBe(0);
    expect(point.parent).toBe(first.id);
    // The same content references as the first point's (which read back equal above), not a reading.
    const now = (await entriesOf(vault, point)).find((e) => e.name === "long.bin")!;
    const then = (await entriesOf(vault, first)).find((e) => e.name === "long.bin")!;
    expect(now.contentTree).toEqual(then.contentTree);
    const fs = new TreeFileSystem(vault, point.content as TreeLayout);
    expect(await contentOf(fs, await child(fs, await fs.root(), "mid.bin"))).toEqual(await readFile(path.join(top, "mid.bin")));
  });

  test("a folder named through a symlink is backed up as the folder it leads to; symlinks under it stay symlinks", async () => {
    const work = path.dirname(top);
    await mkdir(path.join(work, "real/inner"), { recursive: true });
    await writeFile(path.join(work, "real/inner/file.txt"), "through a link\n");
    await symlink("inner", path.join(work, "real/link-to-inner"));
    await symlink("real", path.join(work, "named"));
    const { point } = await backupTree(vault, path.join(work, "named"), { kind: "tree", source: { type: "folder", path: path.join(work, "named") } });
    const fs = new TreeFileSystem(vault, point.content as TreeLayout);
    const root = await fs.root();
    expect(root.type).toBe("dir");
    expect((await fs.list(root)).map((e) => [e.name, e.node.type])).toEqual([
      ["inner", "dir"],
      ["link-to-inner", "symlink"],
    ]);
    expect((await contentOf(fs, await child(fs, await child(fs, root, "inner"), "file.txt"))).toString()).toBe("through a link\n");
  });

  test("entry chunks that are not JSON, out of order, or carry bad fields are IntegrityErrors naming the chunk", () => {
    const id = Buffer.alloc(32, 7);
    const good: TreeEntry = { dir: "", name: "b", type: "f", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: "1", atime: "1", ctime: "1", ino: 5, nlink: 1 };
    expect(decodeEntries(encodeLine(good), id)).toHaveLength(1);
    const cases: Buffer[] = [
      Buffer.from("{not json\n"),
      Buffer.concat([encodeLine(good), encodeLine({ ...good, name: "a" })]),
      encodeLine({ ...good, mode: 0o17777 }),
      encodeLine({ ...good, size: 10 }),
      encodeLine({ ...good, type: "x" as TreeEntry["type"] }),
      encodeLine({ ...good, chunks: [["zz", 1]] }),
      Buffer.from(JSON.stringify(good)),
    ];
    for (const chunk of cases) {
      expect(() => decodeEntries(chunk, id)).toThrow(IntegrityError);
      expect(() => decodeEntries(chunk, id)).toThrow(/entry chunk 0707/);
    }
  });
});
