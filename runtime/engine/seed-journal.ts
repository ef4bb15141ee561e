/**
 * The seed journal (offline seeding, README "Seeding the first backup offline"): a folder vault
 * made `init --like` an Azure vault is backed up into on premises, shipped on a disk (Data Box,
 * Import/Export) and staged into a container; the journal, written beside the vault's objects as
 * `bulwark-journal.json`, lists every object with its size and SHA-256 and names the destination
 * vault (id and URL). It carries an HMAC under the vault's id key, so nobody without the keys can
 * edit it unnoticed, and a journal made for one vault is refused by another.
 *
 * `bulwark copy` from the staged vault checks it first: an object missing, extra or of another
 * size is refused before anything is written; the small objects (config, keys, index, points,
 * chain markers) are hashed then; each pack is hashed when the copy reads it, before any index
 * entry or point that needs it is written (copy.ts, checkPack). Packs the destination already
 * holds are not read, so not hashed: their presence and size are checked.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { IntegrityError, ObjectNotFoundError, UsageError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import type { MasterKeys } from "./keyring.ts";
import { mapLimit, masterKeyCheck, type Vault, type VaultConfig } from "./vault.ts";

export const JOURNAL_KEY = "bulwark-journal.json";

export interface JournalObject {
  key: string;
  size: number;
  sha256: string;
}

export interface SeedJournal {
  format: "bulwark-seed-journal";
  version: 1;
  created: string;
  /** The seed vault (the folder vault that was shipped). */
  source: { id: string };
  /** The vault the seed is for. */
  destination: { id: string; url: string };
  objects: JournalObject[];
  /** HMAC-SHA256 under the id key of every field above. */
  mac: string;
}

/** Objects that are not content: locks come and go, and the journal does not list itself. */
function journaled(key: string): boolean {
  return key !== JOURNAL_KEY && !key.startsWith("locks/");
}

function journalMac(master: MasterKeys, body: Omit<SeedJournal, "mac">): string {
  return createHmac("sha256", master.idKey).update("bulwark/seed-journal/").update(JSON.stringify(body)).digest("hex");
}

/**
 * The destination's config, read without its keys (it is plain), and proof that it was made
 * `--like` this vault: its master key check holds for these master keys.
 */
export async function likeDestination(master: MasterKeys, destination: ObjectStore): Promise<VaultConfig> {
  let config: VaultConfig;
  try {
    config = JSON.parse((await destination.get("config")).toString("utf8")) as VaultConfig;
  } catch (error) {
    if (error instanceof ObjectNotFoundError) {
      throw new UsageError(`no vault at ${destination.location}: make it first with \`bulwark init --vault ${destination.location} --like THIS-VAULT\``);
    }
    throw error;
  }
  if (config?.format !== "bulwark-vault" || typeof config.id !== "string") throw new IntegrityError(`the config of ${destination.location} names no Bulwark vault`);
  if (masterKeyCheck(master, config.id) !== config.masterKeyCheck) {
    throw new UsageError(
      `the vault at ${destination.location} does not share this vault's master keys; a seed must be backed up into a folder vault made with \`bulwark init --vault FOLDER --like ${destination.location}\``,
    );
  }
  return config;
}

/** Hashes every object of the vault and writes the journal beside them (replacing an older one). */
export async function writeSeedJournal(vault: Vault, destination: { id: string; url: string }, onProgress?: (bytes: number) => void): Promise<SeedJournal> {
  const listed: { key: string; size: number }[] = [];
  for await (const info of vault.store.list("")) if (journaled(info.key)) listed.push(info);
  let hashed = 0;
  const objects = await mapLimit(listed.sort((a, b) => a.key.localeCompare(b.key)), 4, async ({ key }) => {
    const bytes = await vault.store.get(key);
    hashed += bytes.length;
    onProgress?.(hashed);
    return { key, size: bytes.length, sha256: sha256Hex(bytes) };
  });
  const body: Omit<SeedJournal, "mac"> = {
    format: "bulwark-seed-journal",
    version: 1,
    created: new Date().toISOString(),
    source: { id: vault.config.id },
    destination,
    objects,
  };
  const journal: SeedJournal = { ...body, mac: journalMac(vault.master, body) };
  await vault.store.delete(JOURNAL_KEY);
  await vault.store.create(JOURNAL_KEY, Buffer.from(JSON.stringify(journal, null, 1)));
  return journal;
}

/** Whether a vault holds a seed journal (a staged seed). */
export async function hasSeedJournal(store: ObjectStore): Promise<boolean> {
  return (await store.stat(JOURNAL_KEY)) !== undefined;
}

/**
 * Checks a staged seed against its journal before a copy into `to`; returns the check each pack
 * must pass when the copy reads it. Any failure is an IntegrityError and nothing has been written.
 */
export async function checkSeedJournal(from: Vault, to: Vault): Promise<(key: string, bytes: Buffer) => void> {
  const journal = await readJournal(from);
  if (journal.source.id !== from.config.id) throw new IntegrityError(`the seed journal at ${from.store.location} is for vault ${journal.source.id}, not the vault beside it (${from.config.id})`);
  if (journal.destination.id !== to.config.id || sameLocation(journal.destination.url) !== sameLocation(to.store.location)) {
    throw new UsageError(
      `the seed at ${from.store.location} was made for the vault ${journal.destination.url} (id ${journal.destination.id}), not ${to.store.location} (id ${to.config.id}); copy it into that vault`,
    );
  }
  const expected = new Map(journal.objects.map((o) => [o.key, o]));
  const problems: string[] = [];
  const found = new Set<string>();
  for await (const info of from.store.list("")) {
    if (!journaled(info.key)) continue;
    found.add(info.key);
    const entry = expected.get(info.key);
    if (!entry) problems.push(`${info.key} is not in the journal (added after it was written)`);
    else if (entry.size !== info.size) problems.push(`${info.key} has ${info.size} bytes, the journal says ${entry.size}`);
  }
  for (const key of expected.keys()) if (!found.has(key)) problems.push(`${key} is missing`);
  const small = journal.objects.filter((o) => found.has(o.key) && !o.key.startsWith("data/"));
  await mapLimit(small, 8, async (entry) => {
    if (sha256Hex(await from.store.get(entry.key)) !== entry.sha256) problems.push(`${entry.key} was altered (its SHA-256 differs from the journal's)`);
  });
  if (problems.length > 0) throw seedRefused(from, problems, "Nothing was copied");
  return (key, bytes) => {
    const entry = expected.get(key);
    if (!entry || entry.sha256 !== sha256Hex(bytes)) {
      throw seedRefused(from, [`${key} was altered (its SHA-256 differs from the journal's)`], "No index entry or point that needs it was written");
    }
  };
}

async function readJournal(from: Vault): Promise<SeedJournal> {
  let journal: SeedJournal;
  try {
    journal = JSON.parse((await from.store.get(JOURNAL_KEY)).toString("utf8")) as SeedJournal;
  } catch (error) {
    if (error instanceof ObjectNotFoundError) throw error;
    throw new IntegrityError(`the seed journal at ${from.store.location} is damaged (not JSON)`);
  }
  if (journal?.format !== "bulwark-seed-journal" || journal.version !== 1 || !Array.isArray(journal.objects) || typeof journal.mac !== "string") {
    throw new IntegrityError(`the seed journal at ${from.store.location} is damaged (not a Bulwark seed journal)`);
  }
  const { mac, ...body } = journal;
  const expected = Buffer.from(journalMac(from.master, body), "hex");
  const given = Buffer.from(mac, "hex");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new IntegrityError(`the seed journal at ${from.store.location} was edited after it was written (its MAC does not hold); do not import this seed`);
  }
  return journal;
}

function seedRefused(from: Vault, problems: string[], outcome: string): IntegrityError {
  const shown = problems.slice(0, 10).join("; ") + (problems.length > 10 ? `; and ${problems.length - 10} more` : "");
  return new IntegrityError(
    `the staged seed at ${from.store.location} does not match its journal: ${shown}. ${outcome}; ship the seed again (or put back the named objects from the seed disk)`,
  );
}

function sameLocation(location: string): string {
  return location.replace(/\/+$/, "").toLowerCase();
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
