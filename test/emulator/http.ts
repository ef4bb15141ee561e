/** The request and reply shapes every handler of the emulator shares, and the ARM error format. */
import type { IncomingMessage, ServerResponse } from "node:http";

export interface EmulatorRequest {
  method: string;
  /** Decoded path, without the query. */
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body: Buffer;
  /** The origin the client used (https://127.0.0.1:PORT), for URLs handed back to it. */
  origin: string;
}

export interface EmulatorReply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export function header(request: EmulatorRequest, name: string): string | undefined {
  const value = request.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): EmulatorReply {
  return { status, body, headers };
}

/** The ARM error body: {"error": {"code", "message"}}. */
export function armError(status: number, code: string, message: string, headers: Record<string, string> = {}): EmulatorReply {
  return { status, body: { error: { code, message } }, headers };
}

export function parseJson(request: EmulatorRequest): Record<string, any> {
  if (request.body.length === 0) return {};
  try {
    return JSON.parse(request.body.toString("utf8"));
  } catch {
    throw new HttpFailure(armError(400, "InvalidRequestContent", "The request content is not valid JSON."));
  }
}

/** Thrown by handlers to answer with an error reply from deep inside. */
export class HttpFailure extends Error {
  readonly reply: EmulatorReply;
  constructor(reply: EmulatorReply) {
    super(`HTTP ${reply.status}`);
    this.reply = reply;
  }
}

export function send(response: ServerResponse, reply: EmulatorReply): void {
  const headers: Record<string, string> = { ...(reply.headers ?? {}) };
  let payload: Buffer | undefined;
  if (Buffer.isBuffer(reply.body)) {
    payload = reply.body;
  } else if (typeof reply.body === "string") {
    payload = Buffer.from(reply.body, "utf8");
  } else if (reply.body !== undefined) {
    payload = Buffer.from(JSON.stringify(reply.body), "utf8");
    headers["content-type"] ??= "application/json; charset=utf-8";
  }
  headers["x-ms-request-id"] ??= crypto.randomUUID();
  headers["date"] ??= new Date().toUTCString();
  if (!("content-length" in headers)) headers["content-length"] = String(payload?.length ?? 0);
  response.writeHead(reply.status, headers);
  response.end(payload);
}

export async function readBody(request: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of request) parts.push(part as Buffer);
  return Buffer.concat(parts);
}
