/**
 * `bulwark key`: which action was asked for, and which key object an id or a unique prefix of one
 * names (as points are named), read from the object names alone so a damaged key can be removed;
 * and the data-key epochs (`key rotate --data`, `key list`: runtime/engine/keyring.ts).
 */
import { baseKeyBytes, dataKeyId, isKeyring } from "../engine/crypto.ts";
import { createEpoch, readEpochs, type Epoch } from "../engine/keyring.ts";
import type { Vault } from "../engine/vault.ts";
import { NotFoundError, UsageError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { closest } from "./suggest.ts";

export const KEY_ACTIONS = ["list", "add", "remove", "passwd", "rotate"] as const;
export type KeyAction = (typeof KEY_ACTIONS)[number];

/** A key object's id: 16 hex digits (keyring.ts); a prefix of one is hex too. */
const KEY_ID_PREFIX = /^[0-9a-f]{1,16}$/;

export function keyAction(action: string | undefined): KeyAction {
  if ((KEY_ACTIONS as readonly string[]).includes(action ?? "")) return action as KeyAction;
  const usage = `bulwark key ${KEY_ACTIONS.join("|")} --vault V`;
  if (action === undefined) throw new UsageError(`give an action: ${usage}`);
  const suggestion = closest(action, KEY_ACTIONS);
  throw new UsageError(`unknown key action "${action}"${suggestion ? `; did you mean \`bulwark key ${suggestion}\`?` : `: ${usage}`}`);
}

/** The one key object whose id starts with `typed`. */
export async function resolveKeyId(store: ObjectStore, typed: string | undefined): Promise<string> {
  if (!typed || !KEY_ID_PREFIX.test(typed)) throw new UsageError("give the KEY-ID to remove, or a unique prefix of it (see `bulwark key list`)");
  const matches: string[] = [];
  for await (const info of store.list(`keys/${typed}`)) {
    matches.push(info.key.slice("keys/".length));
    if (matches.length > 10) break; // enough to say the prefix is not unique
  }
  if (matches.length === 0) throw new NotFoundError(`no key ${typed} in the vault; see \`bulwark key list\``);
  if (matches.length > 1) throw new UsageError(`${typed} starts ${matches.length} key ids (${matches.sort().join(", ")}); give more of the id`);
  return matches[0];
}

/** `key rotate --data`: a new data-key epoch, one past the highest the vault's storage names. */
export async function rotateDataKey(vault: Vault): Promise<Epoch> {
  if (vault.config.version < 5) {
    throw new UsageError(
      `the vault at ${vault.store.location} has format version ${vault.config.version}, which has one data key and no epochs; ` +
        `make a vault of the current version with \`bulwark init --vault NEW --like ${vault.store.location}\`, copy into it with \`bulwark copy\`, and rotate that`,
    );
  }
  // Read afresh, refused names too: a number already taken, even by a planted object, is not taken again.
  const epochs = await readEpochs(vault.store, vault.master, vault.config.id);
  return createEpoch(vault.store, vault.master, vault.config.id, epochs.highestNumber + 1);
}

export interface EpochRow {
  /** 0 for the master data key, n for the vault's own epochs, null for a key a copy brought or an object refused. */
  epoch: number | null;
  keyId: string | null;
  name: string;
  created: string | null;
  /** Whether new data is sealed under it (by this command's reading). */
  sealing: boolean;
  /** Why the object is refused (it is never used). */
  refused?: string;
}

/** The vault's data-key epochs as `key list` shows them: epoch 0, its own epochs, copied keys, refused objects. */
export function epochRows(vault: Vault): EpochRow[] {
  const sealingId = isKeyring(vault.master.dataKey) ? vault.master.dataKey.sealingKeyId : undefined;
  const baseId = dataKeyId(baseKeyBytes(vault.master.dataKey));
  const rows: EpochRow[] = [{ epoch: 0, keyId: baseId, name: "the master data key (in every key object)", created: vault.config.created, sealing: (sealingId ?? baseId) === baseId }];
  for (const e of vault.epochs.valid) rows.push({ epoch: e.epoch ?? null, keyId: e.keyId, name: e.name, created: e.created, sealing: e.keyId === sealingId });
  for (const r of vault.epochs.refused) rows.push({ epoch: null, keyId: null, name: r.name, created: null, sealing: false, refused: r.reason });
  return rows;
}

export function epochRowsText(rows: EpochRow[]): string {
  const lines = rows.map((r) => {
    const label = r.refused ? "refused" : r.epoch === null ? "copied" : `epoch ${r.epoch}`;
    return `${r.sealing ? "*" : " "} ${label.padEnd(10)}  ${r.keyId ?? "".padEnd(16)}  ${r.name}${r.created ? `  ${r.created}` : ""}${r.refused ? `: ${r.refused}` : ""}`;
  });
  return ["data-key epochs (* seals new data):", ...lines].join("\n");
}
