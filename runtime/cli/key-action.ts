/**
 * `bulwark key`: which action was asked for, and which key object an id or a unique prefix of one
 * names (as points are named), read from the object names alone so a damaged key can be removed.
 */
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
