/**
 * A point's disk served read-only over the NBD protocol (`bulwark mount --nbd`, issue 11), so an
 * administrator attaches it with any NBD client (nbd-client, qemu-nbd, nbdcopy, nbdfuse) and mounts
 * whatever filesystem the OS knows, the way Azure Backup's mount script serves a point over iSCSI.
 * The bytes come from a RandomAccess (a disk point through block-reader.ts, read through the vault);
 * nothing is written, ever.
 *
 * What the server speaks: the fixed newstyle handshake only (no oldstyle, no TLS); the options
 * NBD_OPT_EXPORT_NAME, NBD_OPT_GO and NBD_OPT_INFO (replying NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE and,
 * when asked, NBD_INFO_NAME), NBD_OPT_LIST and NBD_OPT_ABORT; every other option, structured replies
 * and TLS included, is refused with NBD_REP_ERR_UNSUP, so every reply is a simple reply. In
 * transmission: NBD_CMD_READ (answered by handle, possibly out of order), NBD_CMD_DISC; writes, trims
 * and write-zeroes fail with EPERM (the export is read-only) and anything else with EINVAL.
 *
 * A client is untrusted: a wrong magic, unknown client flags, an option too long or a name that is
 * not ours where no error can be replied closes that connection (a hard disconnect) and nothing
 * else; a read is bounds-checked and capped at MAX_READ_BYTES, and a connection holds at most
 * MAX_REQUESTS_IN_FLIGHT reads and MAX_BYTES_IN_FLIGHT bytes until their replies are written to the
 * socket: past that the server stops reading its socket, so a fast client (or one that does not read
 * its replies) is slowed by TCP, not buffered. At most MAX_CONNECTIONS are served at once.
 * A read the disk fails (an IntegrityError from the vault: a damaged chunk) is answered EIO and
 * logged; the connection stays up and other ranges still read.
 *
 * Sources:
 * - The NBD protocol, NetworkBlockDevice/nbd doc/proto.md: "Newstyle negotiation" and "Fixed newstyle
 *   negotiation" (NBDMAGIC, IHAVEOPT, the option request and the option reply with magic
 *   0x3e889045565a9); "Termination of the session during option haggling" (when a hard disconnect is
 *   allowed); "Transmission": "Request message" (magic 0x25609513, 28 bytes), "Simple reply message"
 *   (magic 0x67446698: no payload when the error is set), replies in any order, matched by handle;
 *   "Terminating the transmission phase"; "Block size constraints" (minimum 1, preferred a power of
 *   two of at least 512, the maximum a client should expect to be served: 2^25 bytes); "Values":
 *   handshake, client and transmission flags, option types (NBD_OPT_INFO/NBD_OPT_GO data: name
 *   length, name, count of information requests, the requests), option reply types
 *   (NBD_REP_INFO with NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE), request types and
 *   "Error values" (EPERM for writes to a read-only export, EINVAL for unknown commands and flags).
 * - NetworkBlockDevice/nbd doc/uri.md "NBD URI components" and "NBD URI export name": the URI
 *   printed (the path without its leading `/` is the export name; IPv6 hosts in brackets).
 */
import { createServer, type Server, type Socket } from "node:net";

import type { RandomAccess } from "./block-reader.ts";

export interface NbdOptions {
  /** The address to listen on ("127.0.0.1", "::1", "0.0.0.0"). */
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** The export's name (default ""): the URI's path. The empty name, the "default export", also opens it. */
  exportName?: string;
  /** Preferred request size told to clients (a power of two, 512 to MAX_READ_BYTES; default 4096). A disk point reads best by its 64 KiB blocks. */
  preferredBlockSize?: number;
  /** Aborting stops listening and closes every connection. */
  signal?: AbortSignal;
  log?: (event: NbdEvent) => void;
}

/** What the server tells its log: connections, and what went wrong with one of them. */
export type NbdEvent =
  | { event: "connected"; client: string }
  | { event: "disconnected"; client: string }
  /** The client broke the protocol and was disconnected. */
  | { event: "dropped"; client: string; reason: string }
  /** The disk failed a read (a damaged chunk, say): the client got EIO. */
  | { event: "read-failed"; client: string; offset: number; length: number; error: string }
  /** Accepting connections failed (out of file descriptors, say); the server goes on listening. */
  | { event: "server-failed"; error: string };

export interface NbdServer {
  /** nbd://host:port/exportName, for a client to connect to. */
  readonly uri: string;
  readonly address: { host: string; port: number };
  /** Settles once the server stopped after the signal aborted: nothing listens or reads the disk any more. */
  readonly closed: Promise<void>;
}

/** The largest read answered (the protocol's "Block size constraints": clients should not expect more). */
export const MAX_READ_BYTES = 32 * 1024 * 1024;
/** Reads one connection may have started and not yet answered. */
export const MAX_REQUESTS_IN_FLIGHT = 16;
/** Bytes of reads one connection may hold at once: sixteen reads of 2 MiB, or one of MAX_READ_BYTES. */
export const MAX_BYTES_IN_FLIGHT = MAX_READ_BYTES;
/** Connections served at once (a client such as nbdcopy opens 4): with MAX_BYTES_IN_FLIGHT, what bounds the server's memory. */
export const MAX_CONNECTIONS = 16;
/** Option data read at most: a name is at most 4096 bytes, the rest of NBD_OPT_GO a few more. */
const MAX_OPTION_BYTES = 8192;
/** Options in one handshake: a real client sends a handful; more is a client wasting the server. */
const MAX_OPTIONS = 64;
/** A connection that does not finish its handshake in this time is dropped, so idle sockets cannot pile up. */
const HANDSHAKE_TIMEOUT_MS = 30_000;
const DEFAULT_PREFERRED_BLOCK_SIZE = 4096;

// Magic numbers and values, as proto.md names them.
const NBDMAGIC = Buffer.from("NBDMAGIC", "ascii");
const IHAVEOPT = Buffer.from("IHAVEOPT", "ascii");
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;

const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
const NBD_FLAG_NO_ZEROES = 1 << 1;
const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
const NBD_FLAG_C_NO_ZEROES = 1 << 1;

const NBD_FLAG_HAS_FLAGS = 1 << 0;
const NBD_FLAG_READ_ONLY = 1 << 1;
const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
/** Read-only, and with no cache of our own (the vault's reads are the same on every connection), so many connections are safe. */
const TRANSMISSION_FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_CAN_MULTI_CONN;

const NBD_OPT_EXPORT_NAME = 1;
const NBD_OPT_ABORT = 2;
const NBD_OPT_LIST = 3;
const NBD_OPT_INFO = 6;
const NBD_OPT_GO = 7;

const NBD_REP_ACK = 1;
const NBD_REP_SERVER = 2;
const NBD_REP_INFO = 3;
const NBD_REP_ERR_UNSUP = 2 ** 31 + 1;
const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
const NBD_REP_ERR_TOO_BIG = 2 ** 31 + 9;

const NBD_INFO_EXPORT = 0;
const NBD_INFO_NAME = 1;
const NBD_INFO_BLOCK_SIZE = 3;

const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;
const NBD_CMD_TRIM = 4;
const NBD_CMD_WRITE_ZEROES = 6;

const NBD_EPERM = 1;
const NBD_EIO = 5;
const NBD_EINVAL = 22;

const REQUEST_BYTES = 28;
/** Names longer than this are not strings in the protocol's sense. */
const MAX_NAME_BYTES = 4096;

/** Serves `disk` read-only over NBD until `options.signal` aborts. */
export async function serveNbd(disk: RandomAccess, options: NbdOptions): Promise<NbdServer> {
  options.signal?.throwIfAborted();
  const exportName = options.exportName ?? "";
  const preferredBlockSize = options.preferredBlockSize ?? DEFAULT_PREFERRED_BLOCK_SIZE;
  checkExport(disk, exportName, preferredBlockSize);
  const log = options.log ?? (() => {});
  const exported: Export = { disk, name: exportName, preferredBlockSize };

  const sockets = new Set<Socket>();
  const sessions = new Set<Promise<void>>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    const session = new Session(socket, exported, log).run();
    sessions.add(session);
    void session.finally(() => sessions.delete(session));
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on("drop", (dropped) => log({ event: "dropped", client: `${dropped?.remoteAddress}:${dropped?.remotePort}`, reason: `more than ${MAX_CONNECTIONS} connections at once` }));
  await listen(server, options.host, options.port);
  server.on("error", (error) => log({ event: "server-failed", error: error.message }));

  const closed = new Promise<void>((resolve) => {
    const stop = (): void => {
      // The sessions end once their sockets are gone and their pending disk reads have settled.
      server.once("close", () => void Promise.allSettled([...sessions]).then(() => resolve()));
      server.close();
      for (const socket of sockets) socket.destroy();
    };
    if (options.signal?.aborted) stop();
    else options.signal?.addEventListener("abort", stop, { once: true });
  });
  const { port } = server.address() as { port: number };
  return { uri: nbdUri(options.host, port, exportName), address: { host: options.host, port }, closed };
}

/** nbd://host:port/name, as doc/uri.md writes it: IPv6 literals in brackets, the name percent-encoded. */
export function nbdUri(host: string, port: number, exportName: string): string {
  const authority = host.includes(":") ? `[${host}]` : host;
  return `nbd://${authority}:${port}/${encodeURIComponent(exportName)}`;
}

interface Export {
  readonly disk: RandomAccess;
  readonly name: string;
  readonly preferredBlockSize: number;
}

function checkExport(disk: RandomAccess, exportName: string, preferredBlockSize: number): void {
  if (!Number.isSafeInteger(disk.size) || disk.size < 0) throw new RangeError(`cannot serve a disk of ${disk.size} bytes over NBD`);
  if (Buffer.byteLength(exportName) > MAX_NAME_BYTES || exportName.includes("\0")) {
    throw new RangeError(`the NBD export name must be at most ${MAX_NAME_BYTES} bytes of UTF-8 without NUL`);
  }
  const powerOfTwo = Number.isInteger(Math.log2(preferredBlockSize));
  if (!powerOfTwo || preferredBlockSize < 512 || preferredBlockSize > MAX_READ_BYTES) {
    throw new RangeError(`the preferred NBD block size must be a power of two from 512 to ${MAX_READ_BYTES}, not ${preferredBlockSize}`);
  }
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** The client broke the protocol: the connection is dropped (a hard disconnect), saying why. */
class ProtocolViolation extends Error {}

/** The client went away (or was disconnected) while the server was reading from it. */
class ConnectionGone extends Error {}

/** One client's connection: the handshake, then requests until it disconnects. */
class Session {
  private readonly socket: Socket;
  private readonly exported: Export;
  private readonly log: (event: NbdEvent) => void;
  private readonly client: string;
  private readonly input: SocketInput;
  private readonly output: SocketOutput;
  private readonly inFlight = new InFlightReads();
  private clientFlags = 0;

  constructor(socket: Socket, exported: Export, log: (event: NbdEvent) => void) {
    this.socket = socket;
    this.exported = exported;
    this.log = log;
    this.client = `${socket.remoteAddress}:${socket.remotePort}`;
    this.input = new SocketInput(socket);
    this.output = new SocketOutput(socket);
  }

  async run(): Promise<void> {
    this.log({ event: "connected", client: this.client });
    // A reset or a write to a closed socket: the session ends when its reads fail.
    this.socket.on("error", () => {});
    this.socket.setNoDelay(true);
    this.socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => this.socket.destroy(new ProtocolViolation(`no handshake within ${HANDSHAKE_TIMEOUT_MS / 1000} s`)));
    try {
      if (await this.handshake()) {
        this.socket.setTimeout(0);
        await this.transmit();
        // NBD_CMD_DISC: every request before it is answered before the connection closes.
        await this.inFlight.settled();
      }
      this.socket.end();
    } catch (error) {
      if (!(error instanceof ConnectionGone)) this.log({ event: "dropped", client: this.client, reason: error instanceof Error ? error.message : String(error) });
      this.socket.destroy();
    } finally {
      await this.inFlight.settled();
      // Said once the socket is closed, when the connection no longer counts against MAX_CONNECTIONS.
      // (Not events.once: it would reject on an "error" event, such as a reset, before the close.)
      if (!this.socket.closed) await new Promise((resolve) => this.socket.once("close", resolve));
      this.log({ event: "disconnected", client: this.client });
    }
  }

  /** True when the client chose the export and transmission begins; false when it aborted. */
  private async handshake(): Promise<boolean> {
    await this.output.send(NBDMAGIC, IHAVEOPT, u16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    this.clientFlags = (await this.input.read(4)).readUInt32BE(0);
    if ((this.clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
      throw new ProtocolViolation(`unknown client flags 0x${this.clientFlags.toString(16)}`);
    }
    for (let count = 0; count < MAX_OPTIONS; count++) {
      const header = await this.input.read(16);
      if (!header.subarray(0, 8).equals(IHAVEOPT)) throw new ProtocolViolation(`option ${count + 1} does not start with IHAVEOPT`);
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      const outcome = await this.answerOption(option, length);
      if (outcome !== "continue") return outcome === "transmit";
    }
    throw new ProtocolViolation(`more than ${MAX_OPTIONS} options in one handshake`);
  }

  private async answerOption(option: number, length: number): Promise<"continue" | "transmit" | "abort"> {
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(length);
      case NBD_OPT_ABORT:
        await this.input.skip(length);
        await this.optionReply(option, NBD_REP_ACK);
        return "abort";
      case NBD_OPT_LIST:
        await this.list(length);
        return "continue";
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return (await this.info(option, length)) && option === NBD_OPT_GO ? "transmit" : "continue";
      default:
        // Structured replies, TLS, metadata contexts and options this server does not know.
        await this.input.skip(length);
        await this.optionReply(option, NBD_REP_ERR_UNSUP);
        return "continue";
    }
  }

  /** NBD_OPT_EXPORT_NAME cannot be answered with an error: a name that is not ours ends the session. */
  private async exportName(length: number): Promise<"transmit"> {
    if (length > MAX_NAME_BYTES) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME of ${length} bytes`);
    const name = (await this.input.read(length)).toString("utf8");
    if (!this.isOurs(name)) throw new ProtocolViolation(`NBD_OPT_EXPORT_NAME asked for export ${quoted(name)}, which is not served here`);
    const zeroes = this.clientFlags & NBD_FLAG_C_NO_ZEROES ? Buffer.alloc(0) : Buffer.alloc(124);
    await this.output.send(u64(this.exported.disk.size), u16(TRANSMISSION_FLAGS), zeroes);
    return "transmit";
  }

  private async list(length: number): Promise<void> {
    if (length !== 0) {
      await this.input.skip(length);
      return this.optionReply(NBD_OPT_LIST, NBD_REP_ERR_INVALID);
    }
    const name = Buffer.from(this.exported.name, "utf8");
    await this.optionReply(NBD_OPT_LIST, NBD_REP_SERVER, u32(name.length), name);
    await this.optionReply(NBD_OPT_LIST, NBD_REP_ACK);
  }

  /** NBD_OPT_INFO and NBD_OPT_GO: the export's size, flags and block sizes; true when it was ours. */
  private async info(option: number, length: number): Promise<boolean> {
    if (length > MAX_OPTION_BYTES) {
      await this.input.skip(length);
      await this.optionReply(option, NBD_REP_ERR_TOO_BIG);
      return false;
    }
    const request = parseInfoRequest(await this.input.read(length));
    if (!request) {
      await this.optionReply(option, NBD_REP_ERR_INVALID);
      return false;
    }
    if (!this.isOurs(request.name)) {
      await this.optionReply(option, NBD_REP_ERR_UNKNOWN);
      return false;
    }
    const { disk, name, preferredBlockSize } = this.exported;
    await this.optionReply(option, NBD_REP_INFO, u16(NBD_INFO_EXPORT), u64(disk.size), u16(TRANSMISSION_FLAGS));
    // Sent whether asked or not (allowed): the maximum is smaller than the protocol's default.
    await this.optionReply(option, NBD_REP_INFO, u16(NBD_INFO_BLOCK_SIZE), u32(1), u32(preferredBlockSize), u32(MAX_READ_BYTES));
    if (request.wants.includes(NBD_INFO_NAME)) await this.optionReply(option, NBD_REP_INFO, u16(NBD_INFO_NAME), Buffer.from(name, "utf8"));
    await this.optionReply(option, NBD_REP_ACK);
    return true;
  }

  /** The one export, by its name or as the default export (the empty name). */
  private isOurs(name: string): boolean {
    return name === this.exported.name || name === "";
  }

  private optionReply(option: number, type: number, ...data: Buffer[]): Promise<void> {
    const length = data.reduce((sum, part) => sum + part.length, 0);
    return this.output.send(u64(OPTION_REPLY_MAGIC), u32(option), u32(type), u32(length), ...data);
  }

  /** Requests until NBD_CMD_DISC or the client leaves; reads run while the next requests are read. */
  private async transmit(): Promise<void> {
    for (;;) {
      const request = parseRequest(await this.input.read(REQUEST_BYTES));
      if (!request) throw new ProtocolViolation("a request without the request magic 0x25609513");
      const { type, flags, handle, offset, length } = request;
      if (type === NBD_CMD_DISC) return;
      if (type === NBD_CMD_READ) {
        const error = flags !== 0 ? NBD_EINVAL : this.readError(offset, length);
        if (error) await this.simpleReply(handle, error);
        else {
          // Backpressure: the next request is not read until this one fits.
          await this.inFlight.admit(length);
          this.inFlight.run(length, () => this.answerRead(handle, Number(offset), length));
        }
        continue;
      }
      // A write's payload follows its header: read past it, so the next request is where it should be.
      if (type === NBD_CMD_WRITE) await this.input.skip(length);
      const refused = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES ? NBD_EPERM : NBD_EINVAL;
      await this.simpleReply(handle, refused);
    }
  }

  /** EINVAL for a read past the disk's end or longer than MAX_READ_BYTES; 0 for a good one. */
  private readError(offset: bigint, length: number): number {
    if (length > MAX_READ_BYTES) return NBD_EINVAL;
    return offset + BigInt(length) > BigInt(this.exported.disk.size) ? NBD_EINVAL : 0;
  }

  private async answerRead(handle: Buffer, offset: number, length: number): Promise<void> {
    let data: Buffer;
    try {
      data = length === 0 ? Buffer.alloc(0) : await this.exported.disk.read(offset, length);
      if (data.length !== length) throw new Error(`the disk returned ${data.length} bytes for a read of ${length}`);
    } catch (error) {
      this.log({ event: "read-failed", client: this.client, offset, length, error: error instanceof Error ? error.message : String(error) });
      return this.simpleReply(handle, NBD_EIO);
    }
    await this.output.send(simpleReplyHeader(handle, 0), data);
  }

  private simpleReply(handle: Buffer, error: number): Promise<void> {
    return this.output.send(simpleReplyHeader(handle, error));
  }
}

interface Request {
  flags: number;
  type: number;
  /** The client's 8 bytes, echoed in the reply. */
  handle: Buffer;
  offset: bigint;
  length: number;
}

function parseRequest(header: Buffer): Request | undefined {
  if (header.readUInt32BE(0) !== REQUEST_MAGIC) return undefined;
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    handle: Buffer.from(header.subarray(8, 16)),
    offset: header.readBigUInt64BE(16),
    length: header.readUInt32BE(24),
  };
}

/** NBD_OPT_INFO/NBD_OPT_GO data: a name and the information types asked for; undefined when malformed. */
function parseInfoRequest(data: Buffer): { name: string; wants: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) return undefined;
  const wants = Array.from({ length: count }, (_, i) => data.readUInt16BE(6 + nameLength + 2 * i));
  return { name: data.subarray(4, 4 + nameLength).toString("utf8"), wants };
}

/** A client's string for the log: quoted and escaped (it may hold control characters), and cut short. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
}

function simpleReplyHeader(handle: Buffer, error: number): Buffer {
  return Buffer.concat([u32(SIMPLE_REPLY_MAGIC), u32(error), handle]);
}

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value);
  return out;
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

function u64(value: number | bigint): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(value));
  return out;
}

/**
 * Exact byte counts from a socket. Reading through the socket's async iterator keeps TCP's
 * backpressure: nothing more is taken from the socket than what was asked for and one chunk.
 */
class SocketInput {
  private readonly chunks: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);

  constructor(socket: Socket) {
    this.chunks = socket[Symbol.asyncIterator]();
  }

  /** `length` bytes (callers bound it: a header, or option data of at most MAX_OPTION_BYTES). */
  async read(length: number): Promise<Buffer> {
    while (this.pending.length < length) {
      const chunk = await this.next();
      this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    }
    const out = this.pending.subarray(0, length);
    this.pending = this.pending.subarray(length);
    return out;
  }

  /** Reads past `length` bytes without keeping them (a refused write's payload may be gigabytes). */
  async skip(length: number): Promise<void> {
    let left = length;
    while (left > 0) {
      if (this.pending.length === 0) this.pending = await this.next();
      const taken = Math.min(left, this.pending.length);
      this.pending = this.pending.subarray(taken);
      left -= taken;
    }
  }

  private async next(): Promise<Buffer> {
    let result: IteratorResult<Buffer>;
    try {
      result = await this.chunks.next();
    } catch (error) {
      // The handshake timer destroys the socket with its reason; anything else is the client gone.
      throw error instanceof ProtocolViolation ? error : new ConnectionGone();
    }
    if (result.done) throw new ConnectionGone();
    return result.value;
  }
}

/** Writes to a socket, waiting while its buffer is full, so replies to a slow reader are not piled up in memory. */
class SocketOutput {
  private readonly socket: Socket;
  private drained: Promise<void> | undefined;

  constructor(socket: Socket) {
    this.socket = socket;
  }

  /** Writes the parts back to back (one message: nothing else is written between them). */
  async send(...parts: Buffer[]): Promise<void> {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    let room = true;
    for (const part of parts) room = this.socket.write(part);
    if (!room) await this.drain();
  }

  private drain(): Promise<void> {
    this.drained ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        this.drained = undefined;
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
    return this.drained;
  }
}

/** The reads one connection is answering, bounded in count and bytes. */
class InFlightReads {
  private readonly running = new Set<Promise<void>>();
  private bytes = 0;
  private finished: (() => void) | undefined;

  /** Waits until a read of `length` bytes fits (one always fits when none is running). */
  async admit(length: number): Promise<void> {
    while (this.running.size >= MAX_REQUESTS_IN_FLIGHT || (this.running.size > 0 && this.bytes + length > MAX_BYTES_IN_FLIGHT)) {
      await new Promise<void>((resolve) => (this.finished = resolve));
    }
  }

  /** Starts `answer`, counted until its reply is written; it must not throw. */
  run(length: number, answer: () => Promise<void>): void {
    this.bytes += length;
    const running = answer().finally(() => {
      this.running.delete(running);
      this.bytes -= length;
      this.finished?.();
      this.finished = undefined;
    });
    this.running.add(running);
  }

  async settled(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }
}
