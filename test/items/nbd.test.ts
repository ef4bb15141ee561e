/**
 * A disk served read-only over NBD (runtime/items/nbd.ts), read by the real clients of libnbd-bin:
 * nbdcopy copies the whole export byte for byte (a sparse image whose size is not a multiple of
 * 4096), two at once; nbdinfo reports its size, read-only and block sizes, and lists it; nbdcopy
 * cannot write into it; nbdfuse on one connection gets EIO for a damaged range (an IntegrityError
 * from the disk) and the image's bytes for a good range after it. A bare client (raw-nbd-client.ts)
 * sends what real clients do not: refused options, writes, trims, flushes, reads out of bounds,
 * twenty reads at once (answered out of order, at most sixteen started), 128 reads it does not read
 * the replies of (the server stops starting reads), more connections than served, garbage magic
 * (dropped, and the server serves others); aborting the signal closes everything. And a disk point backed up
 * by the real CLI, served through block-reader.ts: nbdcopy reads the image from the vault (fetching
 * only the blocks holding data), and a block damaged in the vault is an EIO for its read only.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdir, readFile, stat } from "node:fs/promises";
import { once } from "node:events";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { ID_BYTES } from "../../runtime/engine/crypto.ts";
import { packKey } from "../../runtime/engine/pack.ts";
import type { BlockLayout } from "../../runtime/engine/point.ts";
import { openDiskPoint, type RandomAccess } from "../../runtime/items/block-reader.ts";
import { MAX_CONNECTIONS, MAX_READ_BYTES, MAX_REQUESTS_IN_FLIGHT, serveNbd, type NbdEvent, type NbdServer } from "../../runtime/items/nbd.ts";
import { trackChild } from "../support/cleanup.ts";
import { finished, type CliResult } from "../support/cli.ts";
import { hashFile, writeSparseImage, type Region } from "../support/sparse.ts";
import { MIB, pseudoRandom, tempFolder, waitFor } from "../cli/vaults.ts";
import { fileBytes, imageAccess, PointVault } from "./disk-points.ts";
import * as nbd from "./raw-nbd-client.ts";

/** Not a multiple of 4096: the last, partial block must be served too. */
const IMAGE_BYTES = 5 * MIB + 1234;
const REGIONS: Region[] = [
  { offset: 0, data: pseudoRandom("nbd head", 64 * 1024) },
  { offset: MIB + 123, data: pseudoRandom("nbd middle", 300 * 1024) },
  { offset: 3 * MIB, data: pseudoRandom("nbd damaged", 256 * 1024) },
  { offset: IMAGE_BYTES - 5000, data: pseudoRandom("nbd tail", 5000) },
];
/** Where the damaged server's disk fails its reads, as a vault does on a chunk that fails authentication. */
const DAMAGED = { offset: 3 * MIB, length: 256 * 1024 };
const TOOLS = ["nbdcopy", "nbdinfo", "nbdfuse", "umount"];

function missingTools(): string[] {
  return TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
}

/** Runs a client without blocking this process's event loop (the server under test runs in it). */
function run(command: string, args: string[]): Promise<CliResult> {
  return finished(trackChild(spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })));
}

async function runOk(command: string, args: string[]): Promise<string> {
  const result = await run(command, args);
  if (result.code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** A disk whose reads fail where it is damaged, with what the vault throws there. */
function damagedDisk(disk: RandomAccess): RandomAccess {
  return {
    size: disk.size,
    read(offset, length) {
      if (offset < DAMAGED.offset + DAMAGED.length && offset + length > DAMAGED.offset) {
        return Promise.reject(new IntegrityError(`chunk of block ${Math.floor(offset / 65536)} failed authentication: the point is damaged. Run \`bulwark verify\`.`));
      }
      return disk.read(offset, length);
    },
  };
}

/** A disk whose reads complete only when the test says, counting how many were started and not finished. */
class HeldDisk implements RandomAccess {
  readonly size = 64 * MIB;
  readonly pending: { offset: number; length: number; finish: () => void }[] = [];
  running = 0;
  mostRunning = 0;

  read(offset: number, length: number): Promise<Buffer> {
    this.running++;
    this.mostRunning = Math.max(this.mostRunning, this.running);
    return new Promise((resolve) => {
      this.pending.push({
        offset,
        length,
        finish: () => {
          this.running--;
          resolve(heldBytes(offset, length));
        },
      });
    });
  }

  /** Finishes the pending reads, newest first. */
  finishNewestFirst(): void {
    for (const read of this.pending.splice(0).reverse()) read.finish();
  }
}

/** A disk that answers at once, counting its reads. */
class InstantDisk implements RandomAccess {
  readonly size = 128 * MIB;
  started = 0;

  read(offset: number, length: number): Promise<Buffer> {
    this.started++;
    return Promise.resolve(heldBytes(offset, length));
  }
}

/** Bytes that say where they were read: a fill of the 4 KiB block number, modulo a prime. */
function heldBytes(offset: number, length: number): Buffer {
  return Buffer.alloc(length, Math.floor(offset / 4096) % 251);
}

describe("serving a disk over NBD", () => {
  let scratch: string;
  let image: string;
  let imageHash: string;
  const stops: AbortController[] = [];
  const healthyEvents: NbdEvent[] = [];
  const damagedEvents: NbdEvent[] = [];
  let healthy: NbdServer;
  let damaged: NbdServer;

  async function serve(disk: RandomAccess, events: NbdEvent[] = [], host = "127.0.0.1"): Promise<NbdServer> {
    const stop = new AbortController();
    stops.push(stop);
    return serveNbd(disk, { host, port: 0, exportName: "disk", signal: stop.signal, log: (event) => events.push(event) });
  }

  beforeAll(async () => {
    const missing = missingTools();
    if (missing.length > 0) throw new Error(`the NBD tests need ${missing.join(", ")}: install libnbd-bin (nbdcopy, nbdinfo, nbdfuse) and util-linux (umount)`);
    scratch = await tempFolder("nbd");
    image = path.join(scratch, "source.img");
    await writeSparseImage(image, IMAGE_BYTES, REGIONS);
    imageHash = await hashFile(image);
    healthy = await serve(await imageAccess(image), healthyEvents);
    damaged = await serve(damagedDisk(await imageAccess(image)), damagedEvents);
  });

  afterAll(async () => {
    for (const stop of stops) stop.abort();
    await Promise.all([healthy?.closed, damaged?.closed]);
  });

  test("nbdcopy copies the whole export: the copy has the source image's size and bytes", async () => {
    const copy = path.join(scratch, "copy.img");
    await runOk("nbdcopy", [healthy.uri, copy]);
    expect((await stat(copy)).size).toBe(IMAGE_BYTES);
    expect(await hashFile(copy)).toBe(imageHash);
  });

  test("two nbdcopy clients at once each copy the whole export", async () => {
    const copies = [path.join(scratch, "first.img"), path.join(scratch, "second.img")];
    await Promise.all(copies.map((copy) => runOk("nbdcopy", [healthy.uri, copy])));
    for (const copy of copies) expect(await hashFile(copy)).toBe(imageHash);
  });

  test("nbdinfo --json reports the export's size, read-only, multi-conn and block sizes (1, 4096, 32 MiB)", async () => {
    const info = JSON.parse(await runOk("nbdinfo", ["--json", healthy.uri])) as { protocol: string; structured: boolean; exports: Record<string, unknown>[] };
    expect(info.protocol).toBe("newstyle-fixed");
    expect(info.structured).toBe(false);
    expect(info.exports).toHaveLength(1);
    expect(info.exports[0]).toMatchObject({
      "export-name": "disk",
      "export-size": IMAGE_BYTES,
      is_read_only: true,
      can_multi_conn: true,
      can_flush: false,
      can_trim: false,
      can_zero: false,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: MAX_READ_BYTES,
    });
  });

  test("nbdinfo --list lists the one export by its name", async () => {
    const listed = JSON.parse(await runOk("nbdinfo", ["--list", "--json", healthy.uri])) as { exports: { "export-name": string; "export-size": number }[] };
    expect(listed.exports.map((e) => [e["export-name"], e["export-size"]])).toEqual([["disk", IMAGE_BYTES]]);
  });

  test("the URI is nbd://host:port/name; the empty name opens the export too", async () => {
    expect(healthy.uri).toBe(`nbd://127.0.0.1:${healthy.address.port}/disk`);
    const size = await runOk("nbdinfo", ["--size", `nbd://127.0.0.1:${healthy.address.port}/`]);
    expect(Number(size)).toBe(IMAGE_BYTES);
  });

  test("an export on ::1 has a bracketed URI that nbdinfo opens", async () => {
    const server = await serve(await imageAccess(image), [], "::1");
    expect(server.uri).toBe(`nbd://[::1]:${server.address.port}/disk`);
    expect(Number(await runOk("nbdinfo", ["--size", server.uri]))).toBe(IMAGE_BYTES);
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("nbdcopy cannot write into the export (read-only) and the source image is unchanged", async () => {
    const other = path.join(scratch, "other.img");
    await writeSparseImage(other, IMAGE_BYTES, [{ offset: 0, data: pseudoRandom("other", 4096) }]);
    const result = await run("nbdcopy", [other, healthy.uri]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/read-only/);
    expect(await hashFile(image)).toBe(imageHash);
  });

  test("through nbdfuse on one connection, a damaged range fails with EIO (logged) and a good range after it reads the image's bytes", async () => {
    const mountpoint = path.join(scratch, "fuse");
    await mkdir(mountpoint);
    const pidFile = path.join(scratch, "nbdfuse.pid");
    const fuse = trackChild(spawn("nbdfuse", ["-r", "-C", "1", "-P", pidFile, path.join(mountpoint, "disk.img"), damaged.uri], { stdio: ["ignore", "pipe", "pipe"] }));
    const exited = once(fuse, "exit");
    try {
      await waitFor("nbdfuse to serve the export", async () => (await readFile(pidFile, "utf8").catch(() => "")).length > 0);
      const file = path.join(mountpoint, "disk.img");
      expect((await stat(file)).size).toBe(IMAGE_BYTES);

      await expect(fileBytes(file, DAMAGED.offset + 4096, 4096)).rejects.toMatchObject({ code: "EIO" });
      const good = REGIONS[1]!;
      expect((await fileBytes(file, good.offset, good.data.length)).equals(good.data)).toBe(true);
    } finally {
      await run("umount", [mountpoint]);
      await exited;
    }
    const failed = damagedEvents.filter((e) => e.event === "read-failed");
    expect(failed.length).toBeGreaterThan(0);
    expect(failed[0]).toMatchObject({ error: expect.stringMatching(/failed authentication/) });
    expect(damagedEvents.filter((e) => e.event === "connected")).toHaveLength(1);
    expect(damagedEvents.filter((e) => e.event === "dropped")).toEqual([]);
  });

  test("a bare client: a damaged read gets EIO and the next read on the connection gets the image's bytes", async () => {
    const client = await nbd.RawNbdClient.connect(damaged.address.port);
    expect(await client.open("disk")).toEqual({ size: BigInt(IMAGE_BYTES), flags: 0x103 });
    client.request(nbd.NBD_CMD_READ, 1n, DAMAGED.offset, 4096);
    expect(await client.reply()).toEqual({ error: nbd.EIO, handle: 1n });
    const tail = REGIONS[3]!;
    client.request(nbd.NBD_CMD_READ, 2n, tail.offset, tail.data.length);
    expect(await client.reply()).toEqual({ error: 0, handle: 2n });
    expect((await client.take(tail.data.length)).equals(tail.data)).toBe(true);
    client.request(nbd.NBD_CMD_DISC, 3n, 0, 0);
    await client.closed;
  });

  test("writes and trims are refused with EPERM, flushes and unknown commands with EINVAL, reads out of bounds with EINVAL; the connection goes on", async () => {
    const client = await nbd.RawNbdClient.connect(healthy.address.port);
    await client.open("disk");
    client.request(nbd.NBD_CMD_WRITE, 1n, 0, 100_000, { payload: pseudoRandom("write", 100_000) });
    client.request(nbd.NBD_CMD_TRIM, 2n, 0, 4096);
    client.request(nbd.NBD_CMD_FLUSH, 3n, 0, 0);
    client.request(42, 4n, 0, 0);
    client.request(nbd.NBD_CMD_READ, 5n, IMAGE_BYTES - 4096, 4097);
    client.request(nbd.NBD_CMD_READ, 6n, 2 ** 53, 1);
    client.request(nbd.NBD_CMD_READ, 7n, 0, 4096, { flags: 1 });
    const replies = [];
    for (let i = 0; i < 7; i++) replies.push(await client.reply());
    expect(replies).toEqual([
      { error: nbd.EPERM, handle: 1n },
      { error: nbd.EPERM, handle: 2n },
      { error: nbd.EINVAL, handle: 3n },
      { error: nbd.EINVAL, handle: 4n },
      { error: nbd.EINVAL, handle: 5n },
      { error: nbd.EINVAL, handle: 6n },
      { error: nbd.EINVAL, handle: 7n },
    ]);
    // The write's payload was read past: the next request is understood.
    client.request(nbd.NBD_CMD_READ, 8n, IMAGE_BYTES - 4096, 4096);
    expect(await client.reply()).toEqual({ error: 0, handle: 8n });
    expect((await client.take(4096)).equals(await fileBytes(image, IMAGE_BYTES - 4096, 4096))).toBe(true);
    client.request(nbd.NBD_CMD_DISC, 9n, 0, 0);
    await client.closed;
    expect(await hashFile(image)).toBe(imageHash);
  });

  test("options: structured replies and unknown options get ERR_UNSUP, a wrong name ERR_UNKNOWN, bad data ERR_INVALID; INFO describes the export; ABORT is acknowledged", async () => {
    const client = await nbd.RawNbdClient.connect(healthy.address.port);
    expect(await client.greeting()).toEqual({ magic: "NBDMAGICIHAVEOPT", flags: 3 });
    client.send(nbd.u32(1)); // fixed newstyle, zeroes wanted
    client.sendOption(nbd.NBD_OPT_STRUCTURED_REPLY);
    expect(await client.optionReply()).toMatchObject({ option: nbd.NBD_OPT_STRUCTURED_REPLY, type: nbd.NBD_REP_ERR_UNSUP });
    client.sendOption(99, Buffer.from("ignored data"));
    expect(await client.optionReply()).toMatchObject({ option: 99, type: nbd.NBD_REP_ERR_UNSUP });
    client.sendOption(nbd.NBD_OPT_INFO, infoRequest("nope", []));
    expect(await client.optionReply()).toMatchObject({ type: nbd.NBD_REP_ERR_UNKNOWN });
    client.sendOption(nbd.NBD_OPT_INFO, Buffer.concat([nbd.u32(100), Buffer.from("disk")]));
    expect(await client.optionReply()).toMatchObject({ type: nbd.NBD_REP_ERR_INVALID });
    client.sendOption(nbd.NBD_OPT_LIST, Buffer.from("x"));
    expect(await client.optionReply()).toMatchObject({ type: nbd.NBD_REP_ERR_INVALID });

    client.sendOption(nbd.NBD_OPT_INFO, infoRequest("disk", [nbd.NBD_INFO_NAME, nbd.NBD_INFO_BLOCK_SIZE]));
    const infos = [];
    for (let reply = await client.optionReply(); reply.type !== nbd.NBD_REP_ACK; reply = await client.optionReply()) {
      expect(reply).toMatchObject({ option: nbd.NBD_OPT_INFO, type: nbd.NBD_REP_INFO });
      infos.push(reply.data);
    }
    const byType = new Map(infos.map((data) => [data.readUInt16BE(0), data.subarray(2)]));
    const exportInfo = byType.get(nbd.NBD_INFO_EXPORT)!;
    expect([exportInfo.readBigUInt64BE(0), exportInfo.readUInt16BE(8)]).toEqual([BigInt(IMAGE_BYTES), 0x103]);
    const sizes = byType.get(nbd.NBD_INFO_BLOCK_SIZE)!;
    expect([sizes.readUInt32BE(0), sizes.readUInt32BE(4), sizes.readUInt32BE(8)]).toEqual([1, 4096, MAX_READ_BYTES]);
    expect(byType.get(nbd.NBD_INFO_NAME)!.toString()).toBe("disk");

    client.sendOption(nbd.NBD_OPT_ABORT);
    expect(await client.optionReply()).toMatchObject({ option: nbd.NBD_OPT_ABORT, type: nbd.NBD_REP_ACK });
    await client.closed;
  });

  test("NBD_OPT_EXPORT_NAME without NO_ZEROES gets 124 zero bytes after the size and flags", async () => {
    const client = await nbd.RawNbdClient.connect(healthy.address.port);
    await client.greeting();
    client.send(nbd.u32(1));
    client.sendOption(nbd.NBD_OPT_EXPORT_NAME, Buffer.from("disk"));
    const reply = await client.take(134);
    expect([reply.readBigUInt64BE(0), reply.readUInt16BE(8)]).toEqual([BigInt(IMAGE_BYTES), 0x103]);
    expect(reply.subarray(10).equals(Buffer.alloc(124))).toBe(true);
    client.request(nbd.NBD_CMD_DISC, 1n, 0, 0);
    await client.closed;
  });

  test("clients sending garbage magic, unknown flags or a name not served are disconnected, and the server keeps serving others", async () => {
    const dropsBefore = healthyEvents.filter((e) => e.event === "dropped").length;
    const garbageOption = await nbd.RawNbdClient.connect(healthy.address.port);
    await garbageOption.greeting();
    garbageOption.send(nbd.u32(3), Buffer.from("GARBAGE!GARBAGE!"));
    const unknownFlags = await nbd.RawNbdClient.connect(healthy.address.port);
    await unknownFlags.greeting();
    unknownFlags.send(nbd.u32(0x80));
    const garbageRequest = await nbd.RawNbdClient.connect(healthy.address.port);
    await garbageRequest.open("disk");
    garbageRequest.send(Buffer.alloc(28, 0xee));
    const wrongName = await nbd.RawNbdClient.connect(healthy.address.port);
    await wrongName.greeting();
    wrongName.send(nbd.u32(3));
    wrongName.sendOption(nbd.NBD_OPT_EXPORT_NAME, Buffer.from("not-ours"));
    await Promise.all([garbageOption.closed, unknownFlags.closed, garbageRequest.closed, wrongName.closed]);

    await waitFor("the four drops to be logged", () => healthyEvents.filter((e) => e.event === "dropped").length === dropsBefore + 4);
    const reasons = healthyEvents.filter((e) => e.event === "dropped").slice(dropsBefore).map((e) => (e.event === "dropped" ? e.reason : ""));
    expect(reasons.sort()).toEqual([
      'NBD_OPT_EXPORT_NAME asked for export "not-ours", which is not served here',
      "a request without the request magic 0x25609513",
      "option 1 does not start with IHAVEOPT",
      "unknown client flags 0x80",
    ]);
    expect(Number(await runOk("nbdinfo", ["--size", healthy.uri]))).toBe(IMAGE_BYTES);
  });

  test("twenty reads sent at once: at most sixteen are started, and replies come as reads finish, out of order, by handle", async () => {
    const disk = new HeldDisk();
    const server = await serve(disk);
    const client = await nbd.RawNbdClient.connect(server.address.port);
    await client.open("disk");
    for (let i = 0; i < 20; i++) client.request(nbd.NBD_CMD_READ, BigInt(i), i * 4096, 4096);

    await waitFor("sixteen reads to start", () => disk.pending.length >= MAX_REQUESTS_IN_FLIGHT);
    disk.finishNewestFirst();
    const replies: bigint[] = [];
    for (let i = 0; i < 16; i++) replies.push(await readReply(client));
    await waitFor("the last four reads to start", () => disk.pending.length === 4);
    disk.finishNewestFirst();
    for (let i = 0; i < 4; i++) replies.push(await readReply(client));

    expect(replies).toEqual([15n, 14n, 13n, 12n, 11n, 10n, 9n, 8n, 7n, 6n, 5n, 4n, 3n, 2n, 1n, 0n, 19n, 18n, 17n, 16n]);
    expect(disk.mostRunning).toBe(MAX_REQUESTS_IN_FLIGHT);
    client.destroy();
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("a client that does not read its replies is not buffered for: the server stops starting reads once TCP's buffers and sixteen replies are full", async () => {
    const disk = new InstantDisk();
    const server = await serve(disk);
    const client = await nbd.RawNbdClient.connect(server.address.port);
    await client.open("disk");
    client.pause();
    const requests = 128;
    const size = 512 * 1024; // 64 MiB asked for in all
    for (let i = 0; i < requests; i++) client.request(nbd.NBD_CMD_READ, BigInt(i), i * size, size);
    await waitFor("sixteen reads to start", () => disk.started >= MAX_REQUESTS_IN_FLIGHT);
    // Turns of the event loop, not time: enough for a server that buffers replies to start every read.
    for (let turn = 0; turn < 100; turn++) await new Promise((resolve) => setImmediate(resolve));
    // Sixteen replies wait in the socket's buffer, a few more in the kernel's: far from all 128.
    expect(disk.started).toBeLessThan(requests / 2);

    client.resume();
    for (let i = 0; i < requests; i++) {
      const { error, handle } = await client.reply();
      expect(error).toBe(0);
      expect((await client.take(size)).equals(heldBytes(Number(handle) * size, size))).toBe(true);
    }
    expect(disk.started).toBe(requests);
    client.destroy();
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("a client that leaves with reads pending does not disturb the server: the reads finish unanswered and the next client is served", async () => {
    const disk = new HeldDisk();
    const events: NbdEvent[] = [];
    const server = await serve(disk, events);
    const leaving = await nbd.RawNbdClient.connect(server.address.port);
    await leaving.open("disk");
    for (let i = 0; i < 4; i++) leaving.request(nbd.NBD_CMD_READ, BigInt(i), i * 4096, 4096);
    await waitFor("the reads to start", () => disk.pending.length === 4);
    leaving.destroy();
    disk.finishNewestFirst();
    await waitFor("the server to see the client leave", () => events.some((e) => e.event === "disconnected"));

    const next = await nbd.RawNbdClient.connect(server.address.port);
    await next.open("disk");
    next.request(nbd.NBD_CMD_READ, 7n, 8192, 4096);
    await waitFor("the read to start", () => disk.pending.length === 1);
    disk.finishNewestFirst();
    expect(await next.reply()).toEqual({ error: 0, handle: 7n });
    expect(events.filter((e) => e.event === "dropped" || e.event === "read-failed")).toEqual([]);
    next.destroy();
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("a read of 32 MiB is served alone (32 MiB in flight per connection), and a read over 32 MiB is refused with EINVAL", async () => {
    const disk = new HeldDisk();
    const server = await serve(disk);
    const client = await nbd.RawNbdClient.connect(server.address.port);
    await client.open("disk");
    client.request(nbd.NBD_CMD_READ, 1n, 0, MAX_READ_BYTES + 1);
    expect(await client.reply()).toEqual({ error: nbd.EINVAL, handle: 1n });
    client.request(nbd.NBD_CMD_READ, 2n, 0, MAX_READ_BYTES);
    client.request(nbd.NBD_CMD_READ, 3n, MAX_READ_BYTES, 4096);
    await waitFor("the big read to start", () => disk.pending.length >= 1);
    disk.finishNewestFirst();
    await waitFor("the small one to start after it", () => disk.pending.length === 1);
    disk.finishNewestFirst();
    expect(await client.reply()).toEqual({ error: 0, handle: 2n });
    expect((await client.take(MAX_READ_BYTES)).equals(heldBytes(0, MAX_READ_BYTES))).toBe(true);
    expect(await client.reply()).toEqual({ error: 0, handle: 3n });
    expect((await client.take(4096)).equals(heldBytes(MAX_READ_BYTES, 4096))).toBe(true);
    expect(disk.mostRunning).toBe(1);
    client.destroy();
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("past sixteen connections at once a new one is closed (and logged), and one opens again when another leaves", async () => {
    const events: NbdEvent[] = [];
    const server = await serve(new HeldDisk(), events);
    const clients = await Promise.all(Array.from({ length: MAX_CONNECTIONS }, () => nbd.RawNbdClient.connect(server.address.port)));
    for (const client of clients) await client.greeting();
    const extra = await nbd.RawNbdClient.connect(server.address.port);
    await extra.closed;
    expect(events.filter((e) => e.event === "dropped")).toEqual([{ event: "dropped", client: expect.any(String), reason: `more than ${MAX_CONNECTIONS} connections at once` }]);

    clients[0]!.destroy();
    await waitFor("the server to see the client leave", () => events.some((e) => e.event === "disconnected"));
    const again = await nbd.RawNbdClient.connect(server.address.port);
    expect(await again.open("disk")).toMatchObject({ size: BigInt(64 * MIB) });
    stops.at(-1)!.abort();
    await server.closed;
  });

  test("aborting the signal closes open connections, stops listening and settles closed", async () => {
    const disk = new HeldDisk();
    const events: NbdEvent[] = [];
    const server = await serve(disk, events);
    const idle = await nbd.RawNbdClient.connect(server.address.port);
    await idle.open("disk");
    const reading = await nbd.RawNbdClient.connect(server.address.port);
    await reading.open("disk");
    reading.request(nbd.NBD_CMD_READ, 1n, 0, 4096);
    await waitFor("the read to start", () => disk.pending.length === 1);

    stops.at(-1)!.abort();
    await Promise.all([idle.closed, reading.closed]);
    // `closed` waits for the disk read still pending: nothing reads the disk after it settles.
    let settled = false;
    void server.closed.then(() => (settled = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    disk.finishNewestFirst();
    await server.closed;
    await expect(nbd.RawNbdClient.connect(server.address.port)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect(events.filter((e) => e.event === "disconnected")).toHaveLength(2);
  });
});

describe("serving a disk point from a vault over NBD", () => {
  const BLOCK = 64 * 1024;
  let vaults: PointVault;
  let image: string;
  let pointId: string;
  const stops: AbortController[] = [];

  /** Serves the point through a fresh reader (an empty block cache), as `bulwark mount` would. */
  async function servePoint(events: NbdEvent[] = []): Promise<{ server: NbdServer; reads: { ranges: number; bytes: number } }> {
    const { vault, reads } = await vaults.open();
    const disk = await openDiskPoint(vault, pointId);
    const stop = new AbortController();
    stops.push(stop);
    const server = await serveNbd(disk, { host: "127.0.0.1", port: 0, exportName: pointId.slice(0, 12), preferredBlockSize: BLOCK, signal: stop.signal, log: (e) => events.push(e) });
    return { server, reads };
  }

  beforeAll(async () => {
    const missing = missingTools();
    if (missing.length > 0) throw new Error(`the NBD tests need ${missing.join(", ")}: install libnbd-bin (nbdcopy, nbdinfo, nbdfuse) and util-linux (umount)`);
    vaults = await PointVault.create("nbd");
    image = path.join(await tempFolder("nbd-point"), "disk.img");
    await writeSparseImage(image, IMAGE_BYTES, REGIONS);
    pointId = (await vaults.backup(image)).id;
  });

  afterAll(async () => {
    for (const stop of stops) stop.abort();
    await vaults?.close();
  });

  test("nbdcopy of a served disk point equals the image, and fetches from the vault only the blocks holding data", async () => {
    const { server, reads } = await servePoint();
    const copy = path.join(path.dirname(image), "copy.img");
    await runOk("nbdcopy", [server.uri, copy]);
    expect(await hashFile(copy)).toBe(await hashFile(image));
    const dataBytes = REGIONS.reduce((sum, r) => sum + r.data.length, 0);
    // Zero blocks are stored as nothing: the copy reads about the data, in whole 64 KiB blocks.
    expect(reads.bytes).toBeGreaterThanOrEqual(dataBytes);
    expect(reads.bytes).toBeLessThan(dataBytes + 8 * BLOCK);
  });

  test("a block damaged in the vault: its read gets EIO, logged with the vault's message, and the next read on the connection returns the image's bytes", async () => {
    const { vault } = await vaults.open();
    const layout = (await vault.readPoint(pointId)).content as BlockLayout;
    const node = await vault.readChunk(CHUNK_TREE, Buffer.from(layout.tree[0]!, "hex"));
    const block = 0; // the pseudo-random head of the image
    const where = vault.locate(node.subarray(block * ID_BYTES, (block + 1) * ID_BYTES));
    const key = packKey(where.pack);
    const original = await vaults.readObject(key);
    const damaged = Buffer.from(original);
    damaged[where.offset + Math.floor(where.length / 2)]! ^= 0x01;
    await vaults.replaceObject(key, damaged);
    try {
      const events: NbdEvent[] = [];
      const { server } = await servePoint(events);
      const client = await nbd.RawNbdClient.connect(server.address.port);
      await client.open(pointId.slice(0, 12));
      client.request(nbd.NBD_CMD_READ, 1n, block * BLOCK, BLOCK);
      expect(await client.reply()).toEqual({ error: nbd.EIO, handle: 1n });
      const middle = REGIONS[1]!;
      client.request(nbd.NBD_CMD_READ, 2n, middle.offset, middle.data.length);
      expect(await client.reply()).toEqual({ error: 0, handle: 2n });
      expect((await client.take(middle.data.length)).equals(middle.data)).toBe(true);
      client.request(nbd.NBD_CMD_DISC, 3n, 0, 0);
      await client.closed;
      expect(events.filter((e) => e.event === "read-failed")).toEqual([
        { event: "read-failed", client: expect.any(String), offset: block * BLOCK, length: BLOCK, error: expect.stringMatching(/damaged|authenticat/i) },
      ]);
    } finally {
      await vaults.replaceObject(key, original);
    }
  });
});

function infoRequest(name: string, wants: number[]): Buffer {
  const count = Buffer.alloc(2);
  count.writeUInt16BE(wants.length);
  const types = Buffer.alloc(2 * wants.length);
  wants.forEach((type, i) => types.writeUInt16BE(type, 2 * i));
  return Buffer.concat([nbd.u32(Buffer.byteLength(name)), Buffer.from(name), count, types]);
}

/** A read's reply from the held disk: its handle, after checking its bytes are those of its offset (handle × 4096). */
async function readReply(client: nbd.RawNbdClient): Promise<bigint> {
  const { error, handle } = await client.reply();
  expect(error).toBe(0);
  expect((await client.take(4096)).equals(heldBytes(Number(handle) * 4096, 4096))).toBe(true);
  return handle;
}
