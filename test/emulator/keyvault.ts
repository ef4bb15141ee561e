/**
 * A Key Vault's keys data plane (api-version 7.x, as @azure/keyvault-keys drives it): create a key
 * (a new version each time), get a key or a version, rotate, and wrapKey/unwrapKey with real RSA
 * (node:crypto). Every version is kept, so data keys wrapped under an old version still unwrap.
 * Unauthenticated requests get Key Vault's bearer challenge (401 + WWW-Authenticate).
 *
 * A version may carry an expiry (exp) and a start (nbf). Outside that window Key Vault refuses
 * encrypt, sign and wrapKey but still allows decrypt, unwrapKey and verify: "Operations outside the
 * nbf / exp window are automatically disallowed, except for decrypt, release, unwrap, and verify"
 * (MicrosoftDocs/azure-docs articles/key-vault/keys/about-keys-details.md, "Date-time controlled
 * operations"; Azure/azure-sdk-for-net#7677: "As on the server side ... honor NotBefore and Expires
 * in Encrypt, Sign, and WrapKey ... Do not crypto-lock customers ... in Decrypt, Verify, or UnwrapKey").
 * The refusal's wording is not documented for keys: it follows Key Vault's for an expired secret
 * ("Operation get is not allowed on a expired secret", 403 Forbidden, Azure/AzureKeyVault#19).
 */
import { constants, createPublicKey, generateKeyPairSync, type KeyObject, privateDecrypt, publicEncrypt } from "node:crypto";
import type { EntraEmulator } from "./auth.ts";
import { type EmulatorReply, type EmulatorRequest, json } from "./http.ts";

interface KeyVersion {
  version: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  keyOps: string[];
  created: number;
  enabled: boolean;
  /** Expiry and start, in seconds since the epoch (Key Vault's IntDate). */
  exp?: number;
  nbf?: number;
  tags?: Record<string, string>;
}

/** What Key Vault refuses outside a version's nbf/exp window (the rest is allowed). */
const TIME_BOUND_OPERATIONS = new Set(["encrypt", "wrapKey", "sign"]);

const ALGORITHMS: Record<string, { padding: number; oaepHash?: string }> = {
  "RSA-OAEP-256": { padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
  "RSA-OAEP": { padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha1" },
  RSA1_5: { padding: constants.RSA_PKCS1_PADDING },
};

function kvError(status: number, code: string, message: string): EmulatorReply {
  return json(status, { error: { code, message } });
}

export class KeyVaultEmulator {
  readonly name: string;
  private readonly keys = new Map<string, KeyVersion[]>();
  private readonly entra: EntraEmulator;
  private readonly authorityOrigin: () => string;
  /** Wrap and unwrap calls served, for tests. */
  cryptoOperations = 0;

  constructor(name: string, entra: EntraEmulator, authorityOrigin: () => string) {
    this.name = name;
    this.entra = entra;
    this.authorityOrigin = authorityOrigin;
  }

  /** Creates an RSA key version directly (seeding). */
  createKey(name: string, keySize = 2048): string {
    return this.addVersion(name, keySize, ["wrapKey", "unwrapKey", "encrypt", "decrypt"]).version;
  }

  keyNames(): string[] {
    return [...this.keys.keys()];
  }

  versions(name: string): string[] {
    return (this.keys.get(name.toLowerCase()) ?? []).map((v) => v.version);
  }

  /** Sets a version's expiry, as the customer (or a rotation policy's expiryTime) does. */
  setExpiry(name: string, version: string, expires: Date): void {
    const entry = this.keys.get(name.toLowerCase())?.find((v) => v.version === version);
    if (!entry) throw new Error(`no key version ${name}/${version}`);
    entry.exp = Math.floor(expires.getTime() / 1000);
  }

  /** Deletes (and purges) a key with all its versions: every request for it answers KeyNotFound. */
  deleteKey(name: string): void {
    this.keys.delete(name.toLowerCase());
  }

  private addVersion(name: string, keySize: number, keyOps: string[], tags?: Record<string, string>): KeyVersion {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: keySize, publicExponent: 0x10001 });
    const entry: KeyVersion = {
      version: crypto.randomUUID().replace(/-/g, ""),
      privateKey,
      publicKey: createPublicKey(privateKey),
      keyOps,
      created: Math.floor(Date.now() / 1000),
      enabled: true,
      tags,
    };
    const versions = this.keys.get(name.toLowerCase()) ?? [];
    versions.push(entry);
    this.keys.set(name.toLowerCase(), versions);
    return entry;
  }

  private bundle(origin: string, name: string, entry: KeyVersion): Record<string, unknown> {
    const jwk = entry.publicKey.export({ format: "jwk" });
    const body: Record<string, unknown> = {
      key: { kid: `${origin}/keys/${name}/${entry.version}`, kty: "RSA", key_ops: entry.keyOps, n: jwk.n, e: jwk.e },
      attributes: {
        enabled: entry.enabled, created: entry.created, updated: entry.created,
        ...(entry.exp !== undefined ? { exp: entry.exp } : {}), ...(entry.nbf !== undefined ? { nbf: entry.nbf } : {}),
        recoveryLevel: "Recoverable+Purgeable", recoverableDays: 90, exportable: false,
      },
    };
    if (entry.tags) body.tags = entry.tags;
    return body;
  }

  handle(request: EmulatorRequest): EmulatorReply {
    const verified = this.entra.verify(request);
    if ("reason" in verified) {
      return {
        status: 401,
        headers: {
          "www-authenticate": `Bearer authorization="${this.authorityOrigin()}/${this.entra.tenantId}", resource="https://vault.azure.net"`,
        },
        body: { error: { code: "Unauthorized", message: `AKV10000: Request is missing a Bearer or PoP token. ${verified.reason}` } },
      };
    }
    const segments = request.path.split("/").filter(Boolean);
    if (segments[0] !== "keys" || segments.length < 2) return kvError(400, "BadParameter", `The emulator's Key Vault serves /keys only, not ${request.path}.`);
    const name = segments[1]!;
    const versions = this.keys.get(name.toLowerCase());
    const body = request.body.length ? JSON.parse(request.body.toString("utf8")) : {};
    const latest = () => versions?.[versions.length - 1];
    const third = segments[2];
    if (request.method === "POST" && third === "create" && segments.length === 3) {
      if (body.kty !== "RSA" && body.kty !== "RSA-HSM") return kvError(400, "BadParameter", "The emulator creates RSA keys only (kty RSA).");
      const size = Number(body.key_size ?? 2048);
      if (![2048, 3072, 4096].includes(size)) return kvError(400, "BadParameter", "key_size must be 2048, 3072 or 4096.");
      const entry = this.addVersion(name, size, body.key_ops ?? ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"], body.tags);
      if (typeof body.attributes?.exp === "number") entry.exp = body.attributes.exp;
      if (typeof body.attributes?.nbf === "number") entry.nbf = body.attributes.nbf;
      return json(200, this.bundle(request.origin, name, entry));
    }
    if (!versions) return kvError(404, "KeyNotFound", `A key with (name/id) ${name} was not found in this key vault.`);
    if (request.method === "POST" && third === "rotate" && segments.length === 3) {
      const current = latest()!;
      const entry = this.addVersion(name, current.publicKey.asymmetricKeyDetails?.modulusLength ?? 2048, current.keyOps, current.tags);
      return json(200, this.bundle(request.origin, name, entry));
    }
    if (request.method === "GET" && third === "versions" && segments.length === 3) {
      return json(200, {
        value: versions.map((v) => ({ kid: `${request.origin}/keys/${name}/${v.version}`, attributes: { enabled: v.enabled, created: v.created, updated: v.created, ...(v.exp !== undefined ? { exp: v.exp } : {}) } })),
        nextLink: null,
      });
    }
    const entry = third === undefined || third === "" ? latest() : versions.find((v) => v.version === third);
    if (!entry) return kvError(404, "KeyNotFound", `A key with (name/id) ${name}/${third} was not found in this key vault.`);
    if (request.method === "GET" && segments.length <= 3) return json(200, this.bundle(request.origin, name, entry));
    const operation = segments[3];
    if (request.method === "POST" && segments.length === 4 && (operation === "wrapkey" || operation === "unwrapkey" || operation === "encrypt" || operation === "decrypt")) {
      const algorithm = ALGORITHMS[body.alg];
      if (!algorithm) return kvError(400, "BadParameter", `Algorithm '${body.alg}' is not supported (RSA-OAEP-256, RSA-OAEP, RSA1_5 are).`);
      const op = operation === "wrapkey" ? "wrapKey" : operation === "unwrapkey" ? "unwrapKey" : operation;
      if (!entry.keyOps.includes(op)) return kvError(403, "Forbidden", `Operation ${op} is not permitted on this key.`);
      if (!entry.enabled) return kvError(403, "Forbidden", "Operation is not allowed on a disabled key.");
      const now = Date.now() / 1000;
      if (TIME_BOUND_OPERATIONS.has(op) && entry.exp !== undefined && now >= entry.exp) return kvError(403, "Forbidden", `Operation ${op} is not allowed on an expired key.`);
      if (TIME_BOUND_OPERATIONS.has(op) && entry.nbf !== undefined && now < entry.nbf) return kvError(403, "Forbidden", `Operation ${op} is not allowed on a key before its activation date.`);
      const value = Buffer.from(String(body.value ?? ""), "base64url");
      let result: Buffer;
      try {
        result = operation === "wrapkey" || operation === "encrypt"
          ? publicEncrypt({ key: entry.publicKey, ...algorithm }, value)
          : privateDecrypt({ key: entry.privateKey, ...algorithm }, value);
      } catch {
        return kvError(400, "BadParameter", "The value could not be processed with this key version and algorithm (wrong key or corrupt data).");
      }
      this.cryptoOperations++;
      return json(200, { kid: `${request.origin}/keys/${name}/${entry.version}`, value: result.toString("base64url") });
    }
    return kvError(400, "BadParameter", `The emulator does not serve ${request.method} ${request.path}.`);
  }
}
