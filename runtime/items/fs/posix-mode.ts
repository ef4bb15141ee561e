/**
 * The file type bits of a POSIX st_mode, as ext and XFS store them in their inodes (POSIX
 * <sys/stat.h>; the kernel's include/uapi/linux/stat.h).
 */
import type { NodeType } from "./types.ts";

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** What `ls` shows a mode as: a folder, a file, a symlink, or another kind (devices, FIFOs, sockets). */
export function nodeTypeOfMode(mode: number): NodeType {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "dir";
    case S_IFREG:
      return "file";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}
