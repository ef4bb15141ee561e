/**
 * Key objects (keys/<id>): each wraps the vault's master keys under one key-encryption key. Adding
 * a passphrase, changing one or adding the customer's Key Vault key writes a new small key
 * object and never touches data, so it takes constant time whatever the vault's size.
 */
import { createHash, randomBytes } from "node:crypto";
import { WrongKeyError, IntegrityError, ServiceError, UsageError } from "../errors.ts";
import type { KeyEncryptionKeyProvider, KeyParams } from "../keys/provider.ts";
import type { ObjectStore } from "../store/store.ts";
import { labelAssociatedData, open, seal } from "./crypto.ts";

export interface MasterKeys {
  /** AES-256-GCM key of every stored blob. */
  dataKey: Buffer;
  /** HMAC-SHA256 key of chunk ids (and the chunker's gear table). */
  idKey: Buffer;
}

export interface KeyObject {
  version: 1;
  id: string;
  kind: string;
  created: string;
  params: KeyParams;
  wrapped: string;
  /** sha256 of the fields above: a damaged key object is told apart from a wrong key. */
  checksum?: string;
}

const KEY_FIELDS = new Set(["version", "id", "kind", "created", "params", "wrapped", "checksum"]);

function keyChecksum(k: KeyObject): string {
  const { version, id, kind, created, params, wrapped } = k;
  return createHash("sha256").update(JSON.stringify({ version, id, kind, created, params, wrapped })).digest("hex");
}

export function newMasterKeys(): MasterKeys {
  return { dataKey: randomBytes(32), idKey: randomBytes(32) };
}

export function configDigest(config: Uint8Array): string {
  return createHash("sha256").update(config).digest("hex");
}

export async function writeKeyObject(
  store: ObjectStore,
  provider: KeyEncryptionKeyProvider,
  master: MasterKeys,
  digest: string,
): Promise<KeyObject> {
  const { kek, params } = await provider.create();
  const id = randomBytes(8).toString("hex");
  const plaintext = Buffer.from(
    JSON.stringify({ dataKey: master.dataKey.toString("base64"), idKey: master.idKey.toString("base64"), configDigest: digest }),
  );
  const keyObject: KeyObject = {
    version: 1,
    id,
    kind: provider.kind,
    created: new Date().toISOString(),
    params,
    wrapped: seal(kek, plaintext, labelAssociatedData("key", `${id}/${provider.kind}`)).toString("base64"),
  };
  keyObject.checksum = keyChecksum(keyObject);
  await store.create(`keys/${id}`, Buffer.from(JSON.stringify(keyObject, null, 1)));
  return keyObject;
}

export async function listKeyObjects(store: ObjectStore): Promise<KeyObject[]> {
  const { keys, damaged } = await readKeyObjects(store);
  if (damaged.length > 0) {
    throw new IntegrityError(`key object ${damaged[0]} is damaged; open the vault with another key and remove it`);
  }
  return keys;
}

/** Every key object that parses and passes its checksum, and the names of those that do not. */
export async function readKeyObjects(store: ObjectStore): Promise<{ keys: KeyObject[]; damaged: string[] }> {
  const keys: KeyObject[] = [];
  const damaged: string[] = [];
  for await (const info of store.list("keys/")) {
    const body = await store.get(info.key);
    try {
      const parsed = JSON.parse(body.toString("utf8")) as KeyObject;
      if (parsed.version !== 1 || typeof parsed.wrapped !== "string" || `keys/${parsed.id}` !== info.key) throw new Error();
      // Key objects written before checksums existed have none; any other field is damage.
      if (Object.keys(parsed).some((field) => !KEY_FIELDS.has(field))) throw new Error();
      if (parsed.checksum !== undefined && parsed.checksum !== keyChecksum(parsed)) throw new Error();
      keys.push(parsed);
    } catch {
      damaged.push(info.key);
    }
  }
  return { keys: keys.sort((a, b) => a.created.localeCompare(b.created)), damaged: damaged.sort() };
}

/**
 * Tries every key object of the provider's kind. One that opens must also hold master keys that
 * `belong` to the vault (the config's master key check): a key object planted by someone without
 * the vault's keys (wrapping needs only a Key Vault key's public half) opens with the customer's
 * key but holds keys of its own, and is refused, never used, whatever order the store lists it in.
 */
export async function unlockMasterKeys(
  store: ObjectStore,
  provider: KeyEncryptionKeyProvider,
  digest: string,
  belongs: (master: MasterKeys) => boolean,
): Promise<{ master: MasterKeys; keyObject: KeyObject; foreign: string[] }> {
  const { keys, damaged } = await readKeyObjects(store);
  // A damaged key object must not pass for a wrong key: say so when no intact key opens.
  const damagedError = () =>
    new IntegrityError(
      `key object ${damaged.join(", ")} is damaged (it does not parse or fails its checksum) and no other ${provider.kind} key of the vault at ` +
        `${store.location} opens with the given key. Put back a copy of the object, or open the vault with another key`,
    );
  const candidates = keys.filter((k) => k.kind === provider.kind);
  if (candidates.length === 0) {
    if (damaged.length > 0) throw damagedError();
    throw new WrongKeyError(
      `the vault at ${store.location} has no ${provider.kind} key; open it with one of its keys (see \`bulwark key list\`)`,
    );
  }
  const foreign: string[] = [];
  // Why a key object's key-encryption key could not be recovered (a Key Vault key version that is gone, say): said at the end.
  const refusals = new Set<string>();
  // A key service that could not answer (denied, throttled, down): the key may well be right.
  let unanswered: ServiceError | undefined;
  for (const keyObject of candidates) {
    let kek: Buffer;
    try {
      kek = await provider.recover(keyObject.params);
    } catch (error) {
      if (error instanceof UsageError) throw error;
      if (error instanceof WrongKeyError) refusals.add(error.message);
      else if (error instanceof ServiceError) unanswered ??= error;
      continue;
    }
    let plaintext: Buffer;
    try {
      plaintext = open(kek, Buffer.from(keyObject.wrapped, "base64"), labelAssociatedData("key", `${keyObject.id}/${keyObject.kind}`), "key");
    } catch {
      continue;
    }
    let parsed: { dataKey: string; idKey: string; configDigest: string };
    try {
      parsed = JSON.parse(plaintext.toString("utf8"));
    } catch {
      foreign.push(`keys/${keyObject.id}`);
      continue;
    }
    // The config first: a changed config (its id, say) also fails the master key check, and must be named as what it is.
    if (parsed.configDigest !== digest) {
      throw new IntegrityError(
        `the vault's config object at ${store.location} was modified after the vault was created; do not trust this vault until it is checked`,
      );
    }
    const master = { dataKey: Buffer.from(String(parsed.dataKey), "base64"), idKey: Buffer.from(String(parsed.idKey), "base64") };
    if (master.dataKey.length !== 32 || master.idKey.length !== 32 || !belongs(master)) {
      foreign.push(`keys/${keyObject.id}`);
      continue;
    }
    return { master, keyObject, foreign };
  }
  if (foreign.length > 0) {
    throw new IntegrityError(
      `key object ${foreign.join(", ")} of the vault at ${store.location} opens with the given key but holds master keys that are not this vault's ` +
        "(they fail the config's master key check): it was written by someone who does not have the vault's keys. It is refused; " +
        "open the vault with another of its keys, and investigate who wrote it before removing it",
    );
  }
  if (damaged.length > 0) throw damagedError();
  // Not "wrong key" when the key service never answered: that is a storage/Azure failure to fix or retry.
  if (unanswered) throw unanswered;
  throw new WrongKeyError(
    provider.kind === "passphrase"
      ? `wrong passphrase for the vault at ${store.location}: no key of the vault opens with it. Check BULWARK_PASSPHRASE or --passphrase-file`
      : `no ${provider.kind} key of the vault at ${store.location} opens with the given key${refusals.size > 0 ? `: ${[...refusals].join("; ")}` : ""}`,
  );
}
