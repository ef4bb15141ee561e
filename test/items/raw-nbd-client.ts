/**
 * A bare NBD client over a TCP socket, for what the real clients (nbdcopy, nbdinfo, nbdfuse) never
 * send: garbage magic, options the server refuses, writes to a read-only export, many reads at once
 * with their replies read in whatever order they come. Messages as NetworkBlockDevice/nbd
 * doc/proto.md lays them out ("Fixed newstyle negotiation", "Request message", "Simple reply message").
 */
import { connect, type Socket } from "node:net";

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_ERR_UNSUP = 2 ** 31 + 1;
export const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
export const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_BLOCK_SIZE = 3;
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const EPERM = 1;
export const EIO = 5;
export const EINVAL = 22;

const IHAVEOPT = Buffer.from("IHAVEOPT", "ascii");
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface SimpleReply {
  error: number;
  handle: bigint;
}

export class RawNbdClient {
  private readonly socket: Socket;
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private wake: (() => void) | undefined;
  /** Settles when the server (or the client) closed the connection. */
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.wake?.();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  static connect(port: number, host = "127.0.0.1"): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port }, () => {
        socket.off("error", reject);
        resolve(new RawNbdClient(socket));
      });
      socket.once("error", reject);
    });
  }

  /** Reads the server's greeting: NBDMAGIC, IHAVEOPT and its 16-bit handshake flags. */
  async greeting(): Promise<{ magic: string; flags: number }> {
    const bytes = await this.take(18);
    return { magic: bytes.subarray(0, 16).toString("ascii"), flags: bytes.readUInt16BE(16) };
  }

  send(...parts: Buffer[]): void {
    for (const part of parts) this.socket.write(part);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    this.send(IHAVEOPT, u32(option), u32(data.length), data);
  }

  async optionReply(): Promise<OptionReply> {
    const header = await this.take(20);
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error(`not an option reply: ${header.toString("hex")}`);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.take(header.readUInt32BE(16)) };
  }

  /** The fixed newstyle handshake by NBD_OPT_EXPORT_NAME without zeroes: the export's size and transmission flags. */
  async open(exportName: string): Promise<{ size: bigint; flags: number }> {
    await this.greeting();
    this.send(u32(3)); // NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES
    this.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(exportName, "utf8"));
    const bytes = await this.take(10);
    return { size: bytes.readBigUInt64BE(0), flags: bytes.readUInt16BE(8) };
  }

  request(type: number, handle: bigint, offset: number, length: number, options: { flags?: number; payload?: Buffer } = {}): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(options.flags ?? 0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.send(header, ...(options.payload ? [options.payload] : []));
  }

  async reply(): Promise<SimpleReply> {
    const header = await this.take(16);
    if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`not a simple reply: ${header.toString("hex")}`);
    return { error: header.readUInt32BE(4), handle: header.readBigUInt64BE(8) };
  }

  /** `length` bytes from the server, once they arrived; fails if the connection closes first. */
  async take(length: number): Promise<Buffer> {
    while (this.buffered < length) {
      if (this.ended) throw new Error(`the server closed the connection with ${this.buffered} of ${length} bytes sent`);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    // Only the chunks that hold these bytes are joined: replies may be queued behind them.
    const parts: Buffer[] = [];
    let gathered = 0;
    while (gathered < length) {
      const chunk = this.chunks.shift()!;
      const used = Math.min(chunk.length, length - gathered);
      parts.push(chunk.subarray(0, used));
      if (used < chunk.length) this.chunks.unshift(chunk.subarray(used));
      gathered += used;
    }
    this.buffered -= length;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
  }

  /** Stops reading from the socket: the server's replies back up in TCP, as with a slow client. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}
