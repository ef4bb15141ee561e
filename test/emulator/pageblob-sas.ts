/**
 * The page-blob data plane behind the SAS URLs that beginGetAccess hands out for managed disks and
 * snapshots: Get Blob (ranged), Get Blob Properties, Get Page Ranges, Get Page Ranges Diff against a
 * previous snapshot's SAS URL (x-ms-previous-snapshot-url, as for managed disks), and Put Page for
 * upload disks. Each grant expires after its durationInSeconds and is invalidated by endGetAccess.
 *
 * Page-range answers follow the Get Page Ranges REST reference (learn.microsoft.com/rest/api/
 * storageservices/get-page-ranges, "URI parameters"): from version 2020-10-02 a response holds at most
 * maxresults ranges (10,000 when not given or larger) and a NextMarker for the rest. A request over a
 * large span of a fragmented blob can exceed the server's processing time (Azure Storage team,
 * "Getting the Page Ranges of a Large Page Blob in Segments", learn.microsoft.com/archive/blogs/
 * windowsazurestorage: fetch about 150 MB per request); the emulator models that with a knob
 * (fragmentedTimeout) answering 500 OperationTimedOut, the Blob service's timeout error code (Blob
 * service error codes: "The operation could not be completed within the permitted time").
 *
 * Every request a grant serves is counted (requests, bytes of page data), so tests hold a reader's
 * claims against what was really served.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { type EmulatorReply, type EmulatorRequest, header } from "./http.ts";
import { type ByteRange, PAGE_SIZE, type PageImage } from "./pagestore.ts";

export type AccessLevel = "Read" | "Write";

export interface SasTarget {
  image: PageImage;
  /** Snapshots and disks of one lineage share it: a diff is allowed only within one lineage. */
  lineage: string;
  kind: "disk" | "snapshot";
  /** Disks in ReadyToUpload/ActiveUpload accept writes through a Write grant. */
  writable: boolean;
  lastModified: Date;
  touch(): void;
}

export interface SasGrant {
  id: string;
  resourceId: string;
  access: AccessLevel;
  expiresOn: Date;
  revoked: boolean;
  url: string;
}

interface GrantRecord extends SasGrant {
  account: string;
  container: string;
  signature: string;
}

export interface PageBlobOptions {
  /** A response lists at most this many ranges and returns NextMarker for the rest (Azure: 10,000). */
  maxRangesPerResponse: number;
  /**
   * A Get Page Ranges (or diff) request whose byte span exceeds spanBytes over a region holding more
   * than ranges ranges times out (500 OperationTimedOut), as a fragmented blob does on Azure.
   */
  fragmentedTimeout?: { spanBytes: number; ranges: number };
}

/** What one grant served: requests by kind and the bytes of page data read through it. */
export interface SasUsage {
  grantId: string;
  resourceId: string;
  reads: number;
  bytesRead: number;
  pageListRequests: number;
}

/**
 * How a diff against an unusable previous snapshot is refused. The Blob service error codes
 * (learn.microsoft.com/rest/api/storageservices/blob-service-error-codes) document
 * PreviousSnapshotNotFound, Conflict (409), "The previous snapshot is not found." (and
 * PreviousSnapshotOperationNotSupported 409, PreviousSnapshotCannotBeNewer 400); a bad previous-snapshot
 * SAS URL has been reported answering a plain 403 AuthenticationFailed (Azure/azure-powershell#12298:
 * GetManagedDiskPageRangesDiff "403 (Server failed to authenticate the request...)").
 */
export type PreviousSnapshotRefusal = "PreviousSnapshotNotFound" | "AuthenticationFailed";

const BLOB_NAME = "abcd";
const SERVICE_VERSION = "2025-05-05";

function storageError(status: number, code: string, message: string, extra = ""): EmulatorReply {
  const body =
    `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${message}\n` +
    `RequestId:${crypto.randomUUID()}\nTime:${new Date().toISOString()}</Message>${extra}</Error>`;
  return { status, body, headers: { "content-type": "application/xml", "x-ms-error-code": code, "x-ms-version": SERVICE_VERSION } };
}

/** Parses "bytes=a-b" or "bytes=a-" into an inclusive range, or undefined when absent. */
function parseRange(value: string | undefined, size: number): ByteRange | undefined | "invalid" {
  if (!value) return undefined;
  const match = /^bytes=(\d+)-(\d*)$/.exec(value.trim());
  if (!match) return "invalid";
  const start = Number(match[1]);
  const end = match[2] ? Math.min(Number(match[2]), size - 1) : size - 1;
  if (start > end || start >= size) return "invalid";
  return { start, end };
}

export class PageBlobService {
  private readonly grants = new Map<string, GrantRecord>();
  private readonly signingKey = randomBytes(32);
  private readonly lookup: (resourceId: string) => SasTarget | undefined;
  readonly options: PageBlobOptions;
  /** Moves the data plane's clock forward (test control: a SAS expires without waiting for it). */
  clockShiftMs = 0;
  /** The next diffs refuse their previous snapshot URL this way (fault knob), whatever the URL. */
  private previousSnapshotRefusals: PreviousSnapshotRefusal[] = [];
  private readonly usage = new Map<string, SasUsage>();

  constructor(lookup: (resourceId: string) => SasTarget | undefined, options: PageBlobOptions) {
    this.lookup = lookup;
    this.options = options;
  }

  /** The data plane's current time: the real clock plus the test's shift. */
  now(): number {
    return Date.now() + this.clockShiftMs;
  }

  grant(origin: string, resourceId: string, access: AccessLevel, durationInSeconds: number): SasGrant {
    const id = crypto.randomUUID();
    const account = `md-${createHmac("sha256", "account").update(resourceId.toLowerCase()).digest("hex").slice(0, 12)}`;
    const container = randomBytes(6).toString("hex");
    const signature = this.sign(id, account, container);
    const url =
      `${origin}/${account}/${container}/${BLOB_NAME}` +
      `?sv=2018-03-28&sr=b&si=${id}&sig=${encodeURIComponent(signature)}`;
    const record: GrantRecord = {
      id, resourceId, access, expiresOn: new Date(this.now() + durationInSeconds * 1000), revoked: false, url, account, container, signature,
    };
    this.grants.set(id, record);
    return publicGrant(record);
  }

  /** The next `times` diffs answer as if their previous snapshot URL were unusable. */
  refusePreviousSnapshot(as: PreviousSnapshotRefusal, times = 1): void {
    for (let i = 0; i < times; i++) this.previousSnapshotRefusals.push(as);
  }

  /** What every grant (of one resource, if given) has served so far. */
  usageOf(resourceId?: string): SasUsage[] {
    return [...this.usage.values()].filter((u) => resourceId === undefined || u.resourceId.toLowerCase() === resourceId.toLowerCase());
  }

  private count(grant: GrantRecord): SasUsage {
    let entry = this.usage.get(grant.id);
    if (!entry) {
      entry = { grantId: grant.id, resourceId: grant.resourceId, reads: 0, bytesRead: 0, pageListRequests: 0 };
      this.usage.set(grant.id, entry);
    }
    return entry;
  }

  /** endGetAccess: every SAS of the resource stops working at once. */
  revokeAll(resourceId: string): number {
    let count = 0;
    for (const grant of this.grants.values()) {
      if (grant.resourceId.toLowerCase() === resourceId.toLowerCase() && !grant.revoked) {
        grant.revoked = true;
        count++;
      }
    }
    return count;
  }

  /** Grants that would still open the data: neither revoked nor expired. */
  active(resourceId?: string): SasGrant[] {
    const now = this.now();
    return [...this.grants.values()]
      .filter((g) => !g.revoked && g.expiresOn.getTime() > now)
      .filter((g) => resourceId === undefined || g.resourceId.toLowerCase() === resourceId.toLowerCase())
      .map(publicGrant);
  }

  private sign(id: string, account: string, container: string): string {
    return createHmac("sha256", this.signingKey).update(`${id}\n${account}\n${container}`).digest("base64");
  }

  /** The grant a SAS URL's query and path name, checked for signature; undefined when forged or unknown. */
  private grantFor(account: string, container: string, query: URLSearchParams): GrantRecord | undefined {
    const grant = this.grants.get(query.get("si") ?? "");
    const signature = query.get("sig") ?? "";
    if (!grant || grant.account !== account || grant.container !== container) return undefined;
    const expected = Buffer.from(grant.signature);
    const given = Buffer.from(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
    return grant;
  }

  /** Requests whose first path segment is a managed-disk account (md-...). */
  handles(segments: string[]): boolean {
    return segments.length >= 1 && (segments[0] ?? "").startsWith("md-");
  }

  handle(request: EmulatorRequest, segments: string[]): EmulatorReply {
    const [account = "", container = "", blob = ""] = segments;
    if (segments.length !== 3 || blob !== BLOB_NAME) return storageError(404, "ResourceNotFound", "The specified resource does not exist.");
    const grant = this.grantFor(account, container, request.query);
    if (!grant) {
      return storageError(403, "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        "<AuthenticationErrorDetail>Signature did not match or the signed identifier is unknown.</AuthenticationErrorDetail>");
    }
    if (grant.revoked) {
      return storageError(403, "AuthenticationFailed",
        "Server failed to authenticate the request. The access to this managed disk or snapshot was revoked (endGetAccess).",
        "<AuthenticationErrorDetail>Signed identifier is no longer valid: access was revoked.</AuthenticationErrorDetail>");
    }
    if (grant.expiresOn.getTime() <= this.now()) {
      return storageError(403, "AuthenticationFailed",
        "Server failed to authenticate the request. The SAS has expired.",
        `<AuthenticationErrorDetail>Signed expiry time [${grant.expiresOn.toUTCString()}] must be after current time [${new Date(this.now()).toUTCString()}]</AuthenticationErrorDetail>`);
    }
    const target = this.lookup(grant.resourceId);
    if (!target) return storageError(404, "BlobNotFound", "The specified blob does not exist.");
    const comp = request.query.get("comp");
    if (request.method === "HEAD" && !comp) return this.properties(target);
    if (request.method === "GET" && !comp) {
      const reply = this.read(request, target);
      const used = this.count(grant);
      used.reads++;
      if (Buffer.isBuffer(reply.body)) used.bytesRead += reply.body.length;
      return reply;
    }
    if (request.method === "GET" && comp === "pagelist") {
      this.count(grant).pageListRequests++;
      return this.pageList(request, target);
    }
    if (request.method === "PUT" && comp === "page") {
      if (grant.access !== "Write" || !target.writable) {
        return storageError(403, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission.");
      }
      return this.putPage(request, target);
    }
    return storageError(400, "UnsupportedHttpVerb", `The emulator's managed-disk endpoint does not support ${request.method} ${comp ? `comp=${comp}` : ""}.`);
  }

  private common(target: SasTarget): Record<string, string> {
    return {
      "x-ms-version": SERVICE_VERSION,
      "last-modified": target.lastModified.toUTCString(),
      etag: `"0x${target.lastModified.getTime().toString(16).toUpperCase()}"`,
    };
  }

  private properties(target: SasTarget): EmulatorReply {
    return {
      status: 200,
      headers: {
        ...this.common(target),
        "content-length": String(target.image.size),
        "content-type": "application/octet-stream",
        "x-ms-blob-type": "PageBlob",
        "x-ms-blob-sequence-number": "0",
        "x-ms-lease-status": "unlocked",
        "x-ms-lease-state": "available",
        "x-ms-server-encrypted": "true",
        "accept-ranges": "bytes",
      },
    };
  }

  private read(request: EmulatorRequest, target: SasTarget): EmulatorReply {
    const size = target.image.size;
    const range = parseRange(header(request, "x-ms-range") ?? header(request, "range"), size);
    if (range === "invalid") return storageError(416, "InvalidRange", "The range specified is invalid for the current size of the resource.");
    const { start, end } = range ?? { start: 0, end: size - 1 };
    const body = target.image.read(start, end - start + 1);
    const headers: Record<string, string> = {
      ...this.common(target),
      "content-type": "application/octet-stream",
      "x-ms-blob-type": "PageBlob",
      "accept-ranges": "bytes",
    };
    if (range) headers["content-range"] = `bytes ${start}-${end}/${size}`;
    return { status: range ? 206 : 200, headers, body };
  }

  private pageList(request: EmulatorRequest, target: SasTarget): EmulatorReply {
    const size = target.image.size;
    const range = parseRange(header(request, "x-ms-range") ?? header(request, "range"), size);
    if (range === "invalid") return storageError(416, "InvalidRange", "The range specified is invalid for the current size of the resource.");
    if (range && (range.start % PAGE_SIZE !== 0 || (range.end + 1) % PAGE_SIZE !== 0)) {
      return storageError(400, "InvalidPageRange", "The page range specified is invalid: it must be 512-byte aligned.");
    }
    let { start, end } = range ?? { start: 0, end: size - 1 };
    const marker = request.query.get("marker");
    if (marker) {
      const resumeAt = Number(Buffer.from(marker, "base64url").toString("utf8"));
      if (!Number.isInteger(resumeAt) || resumeAt < start || resumeAt > end + 1) {
        return storageError(400, "InvalidQueryParameterValue", "The marker is not valid for this request.");
      }
      start = resumeAt;
    }
    // @azure/storage-blob sends the previous snapshot's URL as the x-ms-previous-snapshot-url header
    // (getPageRangesDiffForManagedDisks) or as the prevsnapshot query (listPageRangesDiff, which pages).
    const prevsnapshot = request.query.get("prevsnapshot");
    if (prevsnapshot && !/^https?:\/\//.test(prevsnapshot)) {
      return storageError(409, "PreviousSnapshotOperationNotSupported", "Managed disks are diffed against the previous snapshot's SAS URL, not a snapshot timestamp.");
    }
    let items: Array<{ tag: "PageRange" | "ClearRange"; range: ByteRange }>;
    const previousUrl = header(request, "x-ms-previous-snapshot-url") ?? prevsnapshot ?? undefined;
    if (previousUrl) {
      const refusal = this.previousSnapshotRefusals.shift();
      if (refusal === "AuthenticationFailed") {
        return storageError(403, "AuthenticationFailed",
          "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.");
      }
      if (refusal === "PreviousSnapshotNotFound") return storageError(409, "PreviousSnapshotNotFound", "The previous snapshot is not found.");
      const previous = this.previousTarget(previousUrl);
      if ("reply" in previous) return previous.reply;
      if (previous.target.lineage !== target.lineage) {
        return storageError(409, "PreviousSnapshotOperationNotSupported", "The previous snapshot is not a snapshot of the same disk.");
      }
      if (previous.target.image.size > size) {
        return storageError(409, "PreviousSnapshotCannotBeNewer", "The previous snapshot is larger than the target; it cannot be diffed.");
      }
      const { changed, cleared } = target.image.diff(previous.target.image, start, end);
      items = [
        ...changed.map((r) => ({ tag: "PageRange" as const, range: r })),
        ...cleared.map((r) => ({ tag: "ClearRange" as const, range: r })),
      ].sort((a, b) => a.range.start - b.range.start);
    } else {
      items = target.image.validRanges(start, end).map((r) => ({ tag: "PageRange" as const, range: r }));
    }
    const timeout = this.options.fragmentedTimeout;
    if (timeout && end - start + 1 > timeout.spanBytes && items.length > timeout.ranges) {
      return storageError(500, "OperationTimedOut", "Operation could not be completed within the specified time.");
    }
    // A window cuts ranges at its edges, as the service reports them.
    for (const item of items) {
      item.range = { start: Math.max(item.range.start, start), end: Math.min(item.range.end, end) };
    }
    const requested = Number(request.query.get("maxresults") ?? "0");
    const limit = Math.min(requested > 0 ? requested : Infinity, this.options.maxRangesPerResponse);
    const page = items.slice(0, limit);
    const more = items.length > limit;
    const xml =
      `<?xml version="1.0" encoding="utf-8"?><PageList>` +
      page.map((i) => `<${i.tag}><Start>${i.range.start}</Start><End>${i.range.end}</End></${i.tag}>`).join("") +
      (more ? `<NextMarker>${Buffer.from(String(items[limit]!.range.start)).toString("base64url")}</NextMarker>` : "<NextMarker />") +
      `</PageList>`;
    return {
      status: 200,
      headers: { ...this.common(target), "content-type": "application/xml", "x-ms-blob-content-length": String(size) },
      body: xml,
    };
  }

  private previousTarget(previousUrl: string): { target: SasTarget } | { reply: EmulatorReply } {
    let url: URL;
    try {
      url = new URL(previousUrl);
    } catch {
      return { reply: storageError(400, "InvalidHeaderValue", "The value of x-ms-previous-snapshot-url is not a URL.") };
    }
    const segments = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const grant = segments.length === 3 ? this.grantFor(segments[0]!, segments[1]!, url.searchParams) : undefined;
    // A previous-snapshot URL whose SAS is not valid (forged, revoked, expired) is refused as a
    // plain 403, as reported of Azure; one of a deleted snapshot as documented (see PreviousSnapshotRefusal).
    const refused = storageError(403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.");
    if (!grant) return { reply: refused };
    const target = this.lookup(grant.resourceId);
    if (!target) return { reply: storageError(409, "PreviousSnapshotNotFound", "The previous snapshot is not found.") };
    if (grant.revoked || grant.expiresOn.getTime() <= this.now()) return { reply: refused };
    if (target.kind !== "snapshot") {
      return { reply: storageError(409, "PreviousSnapshotOperationNotSupported", "The previous-snapshot URL must name a snapshot, not a disk.") };
    }
    return { target };
  }

  private putPage(request: EmulatorRequest, target: SasTarget): EmulatorReply {
    const range = parseRange(header(request, "x-ms-range") ?? header(request, "range"), target.image.size);
    if (!range || range === "invalid") return storageError(416, "InvalidRange", "Put Page needs a valid x-ms-range within the disk.");
    const length = range.end - range.start + 1;
    const mode = header(request, "x-ms-page-write");
    try {
      if (mode === "update") {
        if (request.body.length !== length) {
          return storageError(400, "InvalidHeaderValue", `The body is ${request.body.length} bytes but x-ms-range names ${length}.`);
        }
        if (length > 4 * 1024 * 1024) return storageError(413, "RequestBodyTooLarge", "A Put Page body is at most 4 MiB.");
        target.image.write(range.start, request.body);
      } else if (mode === "clear") {
        target.image.clear(range.start, length);
      } else {
        return storageError(400, "InvalidHeaderValue", "x-ms-page-write must be update or clear.");
      }
    } catch (error) {
      return storageError(416, "InvalidPageRange", (error as Error).message);
    }
    target.touch();
    return { status: 201, headers: { ...this.common(target), "x-ms-blob-sequence-number": "0", "x-ms-request-server-encrypted": "true" } };
  }
}

function publicGrant(record: GrantRecord): SasGrant {
  return { id: record.id, resourceId: record.resourceId, access: record.access, expiresOn: record.expiresOn, revoked: record.revoked, url: record.url };
}
