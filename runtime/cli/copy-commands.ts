/**
 * Copies between vaults: `init --like`, `copy` and `seed journal` (runtime/engine/copy.ts,
 * seed-journal.ts). A command that opens two vaults names two keys: the vault it writes or is
 * given with --vault/--to opens with the usual key (--passphrase-file, BULWARK_PASSPHRASE,
 * --key-vault-key, BULWARK_KEY_VAULT_KEY); the other one (--like, --from) with the same options
 * prefixed "from": --from-passphrase-file, BULWARK_FROM_PASSPHRASE, --from-key-vault-key,
 * BULWARK_FROM_KEY_VAULT_KEY.
 */
import { UsageError } from "../errors.ts";
import { azureContext } from "../azure/context.ts";
import type { CopyReport } from "../engine/copy.ts";
import { checkSeedJournal, hasSeedJournal, likeDestination, writeSeedJournal } from "../engine/seed-journal.ts";
import { Vault } from "../engine/vault.ts";
import { AzureKeyVaultProvider } from "../keys/azure-key-vault.ts";
import { readPassphrase } from "../keys/passphrase.ts";
import type { KeyEncryptionKeyProvider } from "../keys/provider.ts";
import { openStore } from "../store/open.ts";
import { removeDeadLocksOfThisHost } from "./leftovers.ts";
import { createProgress, formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;
type Print = (values: Values, json: unknown, text: string) => void;

/** The options that name the other vault's key. */
export const FROM_KEY_OPTIONS = {
  "from-passphrase-file": { type: "string", value: "F", help: "the other vault's passphrase from F (or BULWARK_FROM_PASSPHRASE)" },
  "from-key-vault-key": { type: "string", value: "K", help: "the other vault's Key Vault key K (or BULWARK_FROM_KEY_VAULT_KEY)" },
} as const;

/** The key of the vault copied from (or made like): the passphrase if one is given, else a Key Vault key. */
async function fromKeyProvider(values: Values): Promise<KeyEncryptionKeyProvider> {
  const keyVaultKey = (values["from-key-vault-key"] as string | undefined) ?? process.env.BULWARK_FROM_KEY_VAULT_KEY;
  const hasPassphrase = values["from-passphrase-file"] !== undefined || Boolean(process.env.BULWARK_FROM_PASSPHRASE);
  if (!hasPassphrase && keyVaultKey) {
    const ctx = await azureContext();
    return new AzureKeyVaultProvider(keyVaultKey, ctx.credential, ctx.keyVaultOptions);
  }
  return readPassphrase({ file: values["from-passphrase-file"] as string | undefined, env: "BULWARK_FROM_PASSPHRASE", flag: "--from-passphrase-file" });
}

async function openSource(values: Values, location: string): Promise<Vault> {
  return Vault.open((await openStore(location)).store, await fromKeyProvider(values), { loadIndex: false });
}

/** `bulwark init --vault V2 --like V1`: V2 has its own id, config and key object, and V1's master keys and chunking. */
export async function initLike(values: Values, location: string, provider: KeyEncryptionKeyProvider, print: Print): Promise<void> {
  const like = values.like as string;
  const model = await Vault.open((await openStore(like)).store, await fromKeyProvider(values), { loadIndex: false });
  const opened = await openStore(location);
  await opened.prepare();
  // The same chunking too: chunk boundaries (so ids) depend on it, and dedup across the two needs equal ids.
  const { blockSize, chunker, packSize, zstdLevel } = model.config;
  const vault = await Vault.init(opened.store, provider, { blockSize, chunker, packSize, zstdLevel }, model.master);
  print(
    values,
    { id: vault.config.id, location: opened.store.location, like: model.config.id },
    `created vault ${vault.config.id} at ${opened.store.location}, sharing the master keys of ${model.store.location} (copy points between them with \`bulwark copy\`)`,
  );
}

/** `bulwark copy --from V1 --to V2 [POINT]...` */
export async function copyCommand(values: Values, references: string[], provider: KeyEncryptionKeyProvider, print: Print): Promise<number> {
  const fromLocation = values.from as string | undefined;
  const toLocation = values.to as string | undefined;
  if (!fromLocation || !toLocation) throw new UsageError("give both vaults: bulwark copy --from SOURCE-VAULT --to DESTINATION-VAULT [POINT]...");
  const from = await openSource(values, fromLocation);
  const to = await Vault.open((await openStore(toLocation)).store, provider, { loadIndex: false });
  await removeDeadLocksOfThisHost(to.store);
  // A staged seed is checked against its journal before its index is read or anything is written.
  const checkPack = (await hasSeedJournal(from.store)) ? await checkSeedJournal(from, to) : undefined;
  await from.loadIndex();
  const progress = createProgress("copy", undefined, !values.json && process.stderr.isTTY === true);
  // Loaded only for a copy: it brings the Azure Blob SDK, most of a command's start-up.
  const { copyPoints } = await import("../engine/copy.ts");
  const report: CopyReport = await copyPoints(from, to, { references, checkPack, onProgress: (n) => progress.update(n) });
  progress.done();
  const { points: _ids, ...summary } = report;
  print(
    values,
    { ...summary, points: report.points, seedChecked: checkPack !== undefined },
    `copied ${report.pointsCopied} points (${report.pointsPresent} already there), ${report.packsCopied} packs, ${formatBytes(report.bytesCopied)}` +
      (report.bytesCopied > 0 && report.bytesUploaded === 0 ? " (server-side)" : "") +
      (checkPack ? "\n  the seed matched its journal" : ""),
  );
  return 0;
}

/** `bulwark seed journal --vault FOLDER --for AZURE-VAULT-URL` */
export async function seedCommand(values: Values, positionals: string[], vault: Vault, print: Print): Promise<void> {
  const [action, extra] = positionals;
  if (action !== "journal" || extra) throw new UsageError("give the action: bulwark seed journal --vault SEED-FOLDER --for AZURE-VAULT-URL");
  const forLocation = values.for as string | undefined;
  if (!forLocation) throw new UsageError("name the vault the seed is for: --for AZURE-VAULT-URL (made with `bulwark init --like`)");
  const destination = (await openStore(forLocation)).store;
  const config = await likeDestination(vault.master, destination);
  const progress = createProgress("hashing", undefined, !values.json && process.stderr.isTTY === true);
  const journal = await writeSeedJournal(vault, { id: config.id, url: destination.location }, (n) => progress.update(n));
  progress.done();
  const bytes = journal.objects.reduce((sum, o) => sum + o.size, 0);
  print(
    values,
    { objects: journal.objects.length, bytes, destination: journal.destination },
    `wrote bulwark-journal.json: ${journal.objects.length} objects, ${formatBytes(bytes)}, for ${destination.location}; ship the folder as it is`,
  );
}
