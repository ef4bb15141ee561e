/** A small ext2 image holding the given files, made by the real tool (mke2fs -d from a scratch folder). */
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

export async function ext2Image(dir: string, files: Record<string, string>, size = "1024k"): Promise<Buffer> {
  const source = path.join(dir, "ext2-source");
  for (const [name, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(source, name)), { recursive: true });
    await writeFile(path.join(source, name), text);
  }
  const image = path.join(dir, "ext2.img");
  execFileSync("mke2fs", ["-q", "-F", "-t", "ext2", "-b", "1024", "-d", source, image, size]);
  return readFile(image);
}
