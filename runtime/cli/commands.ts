/** The commands: each parses its options, opens what it needs, and prints its result. */
import { UsageError, describeError } from "../errors.ts";
import { backupDisk, backupFileStream } from "../engine/backup.ts";
import { CodecPool, prestartCodecThreads } from "../engine/codec-pool.ts";
import { listKeyObjects, writeKeyObject, configDigest } from "../engine/keyring.ts";
import { STALE_AFTER_MS, VaultLock, removeAllLocks } from "../engine/locks.ts";
import type { PointManifest } from "../engine/point.ts";
import { pruneVault, type PruneReport } from "../engine/prune.ts";
import { restoreContent } from "../engine/restore.ts";
import { Vault } from "../engine/vault.ts";
import { verifyVault } from "../engine/verify.ts";
import { readPassphrase } from "../keys/passphrase.ts";
import { AzureKeyVaultProvider } from "../keys/azure-key-vault.ts";
import { azureContext } from "../azure/context.ts";
import { isResourceId, parseResourceId } from "../azure/resource-id.ts";
import type { KeyEncryptionKeyProvider } from "../keys/provider.ts";
import { ruleIsEmpty, type RetentionRule } from "../retention/gfs.ts";
import { pointsBeyondRetention } from "../engine/retention-points.ts";
import { describeMissing, forgetPoint, missingPoints } from "../engine/chain.ts";
import { inspectLocalSource, localTargetKind, openBlockSource, openFileTarget, openStreamSource, type LocalKind } from "../sources/local.ts";
import { chooseLatestSource, sameSource } from "./restore-source.ts";
import { removeDeadLocksOfThisHost } from "./leftovers.ts";
import { openStore } from "../store/open.ts";
import { createProgress, formatBytes } from "./progress.ts";
import { backupFolderCommand } from "./folder-commands.ts";
import { findCommand, listCommand, mountCommand, restoreItemsCommand } from "./item-commands.ts";
import { copyCommand, FROM_KEY_OPTIONS, initLike, seedCommand } from "./copy-commands.ts";
import { epochRows, epochRowsText, keyAction, resolveKeyId, rotateDataKey } from "./key-action.ts";
import { plural } from "./plural.ts";
import { filterPoints, pointsText } from "./points-view.ts";

type Values = Record<string, unknown>;
/** An option as the parser takes it, with the words its help shows (runtime/cli/help.ts). */
export interface OptionDef {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
  /** The value's name in help: `--vault V`. */
  value?: string;
  help?: string;
}
export type OptionSpec = Record<string, OptionDef>;

/** One way to call a command, as help and README's command table show it. */
export interface CommandForm {
  /** The command line without `bulwark `: `backup SOURCE --vault V [--json]`. */
  usage: string;
  summary: string;
}

export interface Command extends CommandForm {
  /** Agents and their tables are listed apart from the vault commands. */
  group?: "agents";
  /** Further forms (subcommands, another way to call it), listed under the first. */
  forms?: CommandForm[];
  options: OptionSpec;
  run(values: Values, positionals: string[]): Promise<number | void>;
}

/** The options every vault command takes; help lists the key ones once, not on every line. */
export const common: OptionSpec = {
  vault: { type: "string", value: "V", help: "the vault: a folder or an Azure Blob container URL (or BULWARK_VAULT)" },
  "passphrase-file": { type: "string", value: "F", help: "read the recovery passphrase from F (or BULWARK_PASSPHRASE)" },
  "key-vault-key": { type: "string", value: "K", help: "open with the Key Vault key K when no passphrase is given (or BULWARK_KEY_VAULT_KEY)" },
  json: { type: "boolean", help: "print the result as JSON (errors as a JSON object on stderr)" },
};

function vaultOf(values: Values): string {
  const vault = (values.vault as string | undefined) ?? process.env.BULWARK_VAULT;
  if (!vault) throw new UsageError("no vault given: pass --vault PATH-OR-URL (or set BULWARK_VAULT)");
  return vault;
}

/** The key that opens the vault: the passphrase if one is given, else the customer's Key Vault key. */
async function keyProvider(values: Values): Promise<KeyEncryptionKeyProvider> {
  const keyVaultKey = (values["key-vault-key"] as string | undefined) ?? process.env.BULWARK_KEY_VAULT_KEY;
  const hasPassphrase = values["passphrase-file"] !== undefined || Boolean(process.env.BULWARK_PASSPHRASE);
  if (!hasPassphrase && keyVaultKey) return keyVaultProvider(keyVaultKey);
  return readPassphrase({ file: values["passphrase-file"] as string | undefined, env: "BULWARK_PASSPHRASE", flag: "--passphrase-file" });
}

async function keyVaultProvider(keyId: string): Promise<AzureKeyVaultProvider> {
  const ctx = await azureContext();
  return new AzureKeyVaultProvider(keyId, ctx.credential, ctx.keyVaultOptions);
}

async function openVault(values: Values, options: { loadIndex?: boolean } = {}): Promise<Vault> {
  const provider = await keyProvider(values);
  const vault = await Vault.open((await openStore(vaultOf(values))).store, provider, options);
  // A run of ours on this host that was killed left its lock: its process is gone, so the lock goes.
  await removeDeadLocksOfThisHost(vault.store);
  return vault;
}

function showProgress(values: Values): boolean {
  return !values.json && process.stderr.isTTY === true;
}

function print(values: Values, json: unknown, text: string): void {
  process.stdout.write(values.json ? `${JSON.stringify(json)}\n` : text.endsWith("\n") || text === "" ? text : `${text}\n`);
}

function parseTags(raw: unknown): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const tag of (raw as string[] | undefined) ?? []) {
    const eq = tag.indexOf("=");
    if (eq <= 0) throw new UsageError(`--tag ${tag}: write tags as key=value`);
    tags[tag.slice(0, eq)] = tag.slice(eq + 1);
  }
  return tags;
}

function pointSummary(point: PointManifest) {
  return {
    id: point.id,
    time: point.time,
    kind: point.kind,
    source: point.source.path,
    size: point.size,
    tags: point.tags,
    bytesRead: point.stats.bytesRead,
    bytesNew: point.stats.bytesNew,
    bytesStored: point.stats.bytesStored,
    chunksNew: point.stats.chunksNew,
    durationMs: point.stats.durationMs,
  };
}

function count(values: Values, name: string): number | undefined {
  const raw = values[name] as string | undefined;
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) throw new UsageError(`--${name} ${raw}: give a whole number`);
  return Number(raw);
}

/** An Azure resource id or a blob URL: restored through the Azure workloads (azure-commands.ts, loaded only then: the Azure SDK is most of a command's start-up). */
function isAzureTarget(destination: string): boolean {
  return isResourceId(destination) || /^https?:\/\//i.test(destination);
}

/** A managed disk or page blob takes disk points, a VM id VM points, a database id SQL points. */
function azureTargetKind(destination: string): PointManifest["kind"] {
  if (/\/providers\/Microsoft\.Compute\/virtualMachines\//i.test(destination)) return "vm";
  if (/\/providers\/Microsoft\.Sql\//i.test(destination)) return "sql";
  return "disk";
}

/**
 * The point a restore means: an id or prefix as given; `latest` the newest point of the source the
 * target takes (chooseLatestSource: --source, or the only one, or the only one of the target's kind).
 * `from` is the line that says which source `latest` took.
 */
async function restorePoint(
  vault: Vault,
  reference: string,
  accepts: (p: PointManifest) => boolean,
  targetKind: PointManifest["kind"],
  source: string | undefined,
  destination: string,
): Promise<{ point: PointManifest; from: string }> {
  if (reference !== "latest") return { point: await vault.resolvePoint(reference, accepts), from: "" };
  const candidates = (await vault.listPoints({ skipDamaged: true, onDamaged: () => {} })).filter(accepts);
  const chosen = chooseLatestSource(candidates, targetKind, source, destination);
  const point = await vault.resolvePoint("latest", (p) => accepts(p) && sameSource(p, chosen));
  return { point, from: `\n  the newest point of ${chosen.path}${chosen.why ? ` (${chosen.why})` : ""}` };
}

export const commands: Record<string, Command> = {
  init: {
    usage: "init --vault V [--json]",
    summary: "create a vault (a folder, or an Azure Blob container URL)",
    forms: [
      {
        usage: "init --vault V2 --like V1 [--from-passphrase-file F | --from-key-vault-key K] [--json]",
        summary: "a vault sharing V1's master keys (V1's key from the --from-* options or BULWARK_FROM_PASSPHRASE), so points copy as they are",
      },
    ],
    options: { ...common, like: { type: "string", value: "V1", help: "share the master keys of vault V1" }, ...FROM_KEY_OPTIONS },
    async run(values) {
      const provider = await keyProvider(values);
      if (values.like !== undefined) return initLike(values, vaultOf(values), provider, print);
      const opened = await openStore(vaultOf(values));
      await opened.prepare();
      const vault = await Vault.init(opened.store, provider);
      print(values, { id: vault.config.id, location: opened.store.location }, `created vault ${vault.config.id} at ${opened.store.location}`);
    },
  },

  copy: {
    usage: "copy --from V1 --to V2 [POINT]... [--from-passphrase-file F | --from-key-vault-key K] [--json]",
    summary: "copy points (all by default) and the data they need; V1 opens with the --from-* key, V2 with the usual one; server-side between Azure vaults",
    options: {
      // No --vault: the two vaults are --from and --to.
      "passphrase-file": common["passphrase-file"],
      "key-vault-key": common["key-vault-key"],
      json: common.json,
      from: { type: "string", value: "V1", help: "the vault to copy from" },
      to: { type: "string", value: "V2", help: "the vault to copy to" },
      ...FROM_KEY_OPTIONS,
    },
    async run(values, positionals) {
      return copyCommand(values, positionals, await keyProvider(values), print);
    },
  },

  seed: {
    usage: "seed journal --vault FOLDER --for AZURE-VAULT [--json]",
    summary: "list and sign a seed folder's objects before shipping it (README, seeding)",
    options: { ...common, for: { type: "string", value: "AZURE-VAULT", help: "the Azure vault the seed folder is shipped to" } },
    async run(values, positionals) {
      return seedCommand(values, positionals, await openVault(values, { loadIndex: false }), print);
    },
  },

  backup: {
    usage: "backup SOURCE --vault V [--tag k=v]... [--as disk|file] [--exclude PATTERN]... [--transient URL] [--json]",
    summary: "back up a folder, a file, a raw disk image or block device, or an Azure managed disk, VM or SQL database (by resource id)",
    options: {
      ...common,
      tag: { type: "string", multiple: true, value: "k=v", help: "label the point" },
      as: { type: "string", value: "disk|file", help: "read SOURCE as a disk (a block map) or a file, whatever its name" },
      exclude: { type: "string", multiple: true, value: "PATTERN", help: "leave out what matches, in a folder (a glob on the path under it, ** allowed)" },
      transient: { type: "string", value: "URL", help: "the transient container an Azure SQL export goes through (or BULWARK_TRANSIENT)" },
    },
    async run(values, positionals) {
      const [sourcePath, extra] = positionals;
      if (!sourcePath || extra) throw new UsageError("give exactly one SOURCE: bulwark backup SOURCE --vault V");
      const forced = values.as as string | undefined;
      if (forced && forced !== "disk" && forced !== "file") throw new UsageError(`--as ${forced}: use disk or file`);
      const tags = parseTags(values.tag);
      if (isResourceId(sourcePath)) {
        parseResourceId(sourcePath);
        const vault = await openVault(values);
        const progress = createProgress("backup", undefined, showProgress(values));
        const { backupAzureResource } = await import("./azure-commands.ts");
        const result = await backupAzureResource(vault, sourcePath, values, tags, (n) => progress.update(n));
        progress.done();
        print(values, { ...pointSummary(result.point), ...result.extra }, values.json || !process.stdout.isTTY ? result.point.id : `${result.point.id}\n  ${result.text}`);
        return;
      }
      // The source is checked before the vault is touched: an unreadable source changes nothing.
      const source = await inspectLocalSource(sourcePath, forced as LocalKind | undefined);
      if (source.kind === "tree") return backupFolderCommand(await openVault(values), source.path, values, tags, print, pointSummary);
      if (values.exclude !== undefined) throw new UsageError("--exclude leaves out paths of a folder; the SOURCE is not one");
      prestartCodecThreads(); // they start while the vault's keys are derived
      const vault = await openVault(values);
      const progress = createProgress("backup", source.size, showProgress(values));
      let point: PointManifest;
      const description = { kind: source.kind, source: { type: source.blockDevice ? "block-device" : source.kind === "disk" ? "image" : "file", path: source.path }, tags };
      if (source.kind === "disk") {
        const reader = await openBlockSource(source);
        try {
          point = await backupDisk(vault, reader, description, { onProgress: (n) => progress.update(n) });
        } finally {
          await reader.close();
        }
      } else {
        point = await backupFileStream(vault, openStreamSource(source), description, { onProgress: (n) => progress.update(n) });
      }
      progress.done();
      const summary = pointSummary(point);
      print(
        values,
        summary,
        values.json || !process.stdout.isTTY
          ? point.id
          : `${point.id}\n  read ${formatBytes(summary.bytesRead)}, new ${formatBytes(summary.bytesNew)}, stored ${formatBytes(summary.bytesStored)} in ${(summary.durationMs / 1000).toFixed(1)}s`,
      );
    },
  },

  points: {
    usage: "points --vault V [--source SOURCE] [--tag k=v]... [--host HOST] [--json]",
    summary: "list recovery points, a VM's disk points under it; filtered by source, tags (all given must match) and host",
    options: {
      ...common,
      source: { type: "string", value: "SOURCE", help: "only the points of this path or resource id" },
      tag: { type: "string", multiple: true, value: "k=v", help: "only the points with this tag" },
      host: { type: "string", value: "HOST", help: "only the points of local sources on this host" },
    },
    async run(values) {
      const filter = { source: values.source as string | undefined, tags: parseTags(values.tag), host: values.host as string | undefined };
      const vault = await openVault(values, { loadIndex: false });
      const damaged: string[] = [];
      const points = await vault.listPoints({
        skipDamaged: true,
        onDamaged: (id, error) => damaged.push(`${id}: ${describeError(error)}`),
      });
      for (const line of damaged) process.stderr.write(`bulwark points: point ${line}\n`);
      // A point deleted outside retention (its chain marker or a later point still names it).
      const missing = await missingPoints(vault, points, (problem) => damaged.push(problem));
      for (const m of missing) process.stderr.write(`bulwark points: ${describeMissing(m)}\n`);
      const shown = filterPoints(points, filter);
      print(values, shown.map(pointSummary), shown.length || points.length === 0 ? pointsText(shown) : "no recovery points match");
      // The intact points are listed; the damaged and missing ones are named on stderr, and the exit code says so.
      return damaged.length > 0 || missing.length > 0 ? 5 : 0;
    },
  },

  stats: {
    usage: "stats --vault V [--json]",
    summary: "the vault's size (packs, index, points), logical vs stored bytes, dedup and compression ratios, points per source",
    options: common,
    async run(values) {
      const { statsCommand } = await import("./stats-command.ts");
      return statsCommand(await openVault(values, { loadIndex: false }), values, print);
    },
  },

  diff: {
    usage: "diff A B --vault V [--files] [--json]",
    summary: "what changed between two points of one source: a disk's changed byte ranges (from the block maps), and with --files (always for folder points) the files added, removed and changed",
    options: { ...common, files: { type: "boolean", help: "also compare the files (type, size, mode, time; content is not read)" } },
    async run(values, positionals) {
      const { diffCommand } = await import("./diff-command.ts");
      return diffCommand(await openVault(values), values, positionals, print);
    },
  },

  restore: {
    usage: "restore POINT --vault V --to TARGET [--overwrite] [--source SOURCE] [--nic NIC-ID]... [--location REGION] [--transient URL] [--json]",
    summary: 'restore a point (id, unique id prefix, or "latest") to a local path, a new managed disk, VM or SQL database id, or a page blob URL',
    forms: [
      {
        usage: "restore POINT --vault V --path PATH [--path PATH]... --to DIR [--overwrite] [--json]",
        summary: "restore files and folders of a disk, VM or folder point under DIR at their path (a folder point without --path: all of it)",
      },
    ],
    options: {
      ...common,
      to: { type: "string", value: "TARGET", help: "where to restore: a local path or folder, or an Azure resource id or page blob URL" },
      overwrite: { type: "boolean", help: "replace an existing local file or block device" },
      nic: { type: "string", multiple: true, value: "NIC-ID", help: "a restored VM's network interface" },
      location: { type: "string", value: "REGION", help: "the Azure region of the restored resource (default: the source's)" },
      transient: { type: "string", value: "URL", help: "the transient container an Azure SQL import goes through (or BULWARK_TRANSIENT)" },
      source: { type: "string", value: "SOURCE", help: "the source whose newest point `latest` means" },
      path: { type: "string", multiple: true, value: "PATH", help: "a file or folder of the point to restore" },
    },
    async run(values, positionals) {
      const [reference, extra] = positionals;
      if (!reference || extra) throw new UsageError("give one POINT: an id, a unique prefix, or latest");
      const destination = values.to as string | undefined;
      if (!destination) throw new UsageError("give where to restore: --to PATH");
      if (values.source !== undefined && reference !== "latest") throw new UsageError("--source chooses the source of `latest`; a point id names its source already");
      if (values.path !== undefined) {
        if (isAzureTarget(destination)) throw new UsageError("--path restores files into a local folder: give --to DIR (the agents restore files into a blob container)");
        const vault = await openVault(values);
        const progress = createProgress("restore", undefined, showProgress(values));
        const code = await restoreItemsCommand(vault, values, reference, print, (n) => progress.update(n));
        progress.done();
        return code;
      }
      prestartCodecThreads(); // they start while the vault's keys are derived
      const vault = await openVault(values);
      if (isAzureTarget(destination)) {
        const kind = azureTargetKind(destination);
        const { point, from } = await restorePoint(vault, reference, (p) => p.kind === kind, kind, values.source as string | undefined, destination);
        const { restoreToAzure } = await import("./azure-commands.ts");
        const result = await restoreToAzure(vault, point, destination, values);
        print(values, { id: point.id, to: destination, source: point.source.path, ...result }, `restored ${point.id} to ${destination}${from}${result.note ? `\n${result.note}` : ""}`);
        return;
      }
      const { point, from } = await restorePoint(vault, reference, (p) => p.content !== undefined, await localTargetKind(destination), values.source as string | undefined, destination);
      if (point.kind === "tree") return restoreItemsCommand(vault, { ...values, path: ["/"] }, point.id, print, () => {});
      if (!point.content) throw new UsageError(`point ${point.id} is a ${point.kind} point; restore its members, or use the Azure restore targets`);
      const target = await openFileTarget(destination, point.size, { overwrite: values.overwrite === true });
      const pool = new CodecPool(vault.master, { zstdLevel: vault.config.zstdLevel });
      const progress = createProgress("restore", point.size, showProgress(values));
      try {
        await restoreContent(vault, pool, point, target, { onProgress: (n) => progress.update(n) });
        await target.commit();
      } catch (error) {
        await target.abort();
        throw error;
      } finally {
        await pool.close();
      }
      progress.done();
      print(values, { id: point.id, to: destination, size: point.size, source: point.source.path }, `restored ${point.id} (${formatBytes(point.size)}) to ${destination}${from}`);
    },
  },

  ls: {
    usage: "ls POINT [PATH] --vault V [--long] [--json]",
    summary: "browse a disk or VM point: its disks, volumes, folders and files",
    options: { ...common, long: { type: "boolean", short: "l", help: "show mode, owner, size and time" } },
    async run(values, positionals) {
      return listCommand(await openVault(values), values, positionals, print);
    },
  },

  find: {
    usage: "find POINT PATTERN --vault V [--json]",
    summary: "find names (a glob: '*.conf', '**/etc/*') across a point's volumes",
    options: common,
    async run(values, positionals) {
      return findCommand(await openVault(values), values, positionals, print);
    },
  },

  mount: {
    usage: "mount POINT --vault V --nbd HOST:PORT [--disk os|lunN] [--json]",
    summary: "serve a point's disk read-only over NBD until Ctrl-C",
    options: {
      ...common,
      nbd: { type: "string", value: "HOST:PORT", help: "the address to serve NBD on" },
      disk: { type: "string", value: "os|lunN", help: "which disk of a VM point" },
    },
    async run(values, positionals) {
      return mountCommand(await openVault(values), values, positionals, print);
    },
  },

  verify: {
    usage: "verify --vault V [--read-data | --read-data-subset PCT] [--json]",
    summary: "check the vault's structure, and with --read-data its data too",
    options: {
      ...common,
      "read-data": { type: "boolean", help: "read and authenticate every pack" },
      "read-data-subset": { type: "string", value: "PCT", help: "read and authenticate PCT percent of the packs" },
    },
    async run(values) {
      let percent = values["read-data"] ? 100 : 0;
      const subset = values["read-data-subset"] as string | undefined;
      if (subset !== undefined) {
        const match = /^(\d+(?:\.\d+)?)%?$/.exec(subset);
        if (!match || Number(match[1]) <= 0 || Number(match[1]) > 100) throw new UsageError(`--read-data-subset ${subset}: give a percentage between 0 and 100`);
        percent = Number(match[1]);
      }
      const vault = await openVault(values, { loadIndex: false });
      const lock = await VaultLock.acquire(vault.store, "shared", "verify");
      const pool = new CodecPool(vault.master);
      let report;
      try {
        report = await verifyVault(vault, pool, { readDataPercent: percent, storeNow: lock.storeNow() });
      } finally {
        await pool.close();
        await lock.release().catch(() => {});
      }
      const ok = report.problems.length === 0;
      const lines = [
        `${plural(report.points, "point")}, ${plural(report.indexObjects, "index object")}, ${plural(report.packs, "pack")}; ` +
          `read ${plural(report.packsRead, "pack")}, checked ${plural(report.chunksChecked, "chunk")}`,
        ...(report.unindexedPacks
          ? [
              `${report.unindexedPacks} ${report.unindexedPacks === 1 ? "pack" : "packs"} left by interrupted or running backups (not referenced): ` +
                `prune removes ${report.unindexedRemovableNow} now` +
                (report.unindexedRemovableAfter ? `, the others from ${report.unindexedRemovableAfter} (${STALE_AFTER_MS / 60000} minutes after they were written)` : ""),
            ]
          : []),
        ...report.problems.map((p) => `PROBLEM: ${p}`),
        ok ? "no problems found" : `${plural(report.problems.length, "problem")} found: the listed points cannot be trusted; back their sources up again`,
      ];
      print(values, { ok, ...report }, lines.join("\n"));
      return ok ? 0 : 5;
    },
  },

  forget: {
    usage: "forget --vault V [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--prune] [--dry-run] [--json]",
    summary: "remove the points no --keep-* rule keeps (at least one rule), then with --prune the data only they used",
    options: {
      ...common,
      "keep-last": { type: "string", value: "N", help: "keep the N newest points" },
      "keep-hourly": { type: "string", value: "N", help: "keep the newest point of each of the last N hours with points" },
      "keep-daily": { type: "string", value: "N", help: "keep the newest point of each of the last N days with points" },
      "keep-weekly": { type: "string", value: "N", help: "keep the newest point of each of the last N weeks with points" },
      "keep-monthly": { type: "string", value: "N", help: "keep the newest point of each of the last N months with points" },
      "keep-yearly": { type: "string", value: "N", help: "keep the newest point of each of the last N years with points" },
      prune: { type: "boolean", help: "then prune: delete the data no kept point needs" },
      "dry-run": { type: "boolean", help: "say what would be removed, remove nothing" },
    },
    async run(values) {
      const rule: RetentionRule = {
        last: count(values, "keep-last"),
        hourly: count(values, "keep-hourly"),
        daily: count(values, "keep-daily"),
        weekly: count(values, "keep-weekly"),
        monthly: count(values, "keep-monthly"),
        yearly: count(values, "keep-yearly"),
      };
      if (ruleIsEmpty(rule)) throw new UsageError("give at least one --keep-* option: forget never removes every point");
      const dryRun = values["dry-run"] === true;
      const provider = await keyProvider(values);
      const store = (await openStore(vaultOf(values))).store;
      await removeDeadLocksOfThisHost(store); // a killed run of ours on this host must not block it
      const lock = values.prune ? await VaultLock.acquire(store, dryRun ? "shared" : "exclusive", "forget --prune") : undefined;
      try {
        const vault = await Vault.open(store, provider);
        const points = await vault.listPoints();
        const { remove: removeIds } = pointsBeyondRetention(points, rule);
        const removing = new Set(removeIds);
        const remove = points.filter((p) => removing.has(p.id));
        const keep = new Set(points.filter((p) => !removing.has(p.id)).map((p) => p.id));
        // A point still under its immutability policy cannot be deleted yet: keep it and say so.
        const held: string[] = [];
        if (!dryRun) {
          for (const p of remove) {
            await forgetPoint(vault, p.id, "bulwark forget").catch((error) => held.push(`${p.id.slice(0, 12)}: ${describeError(error).split("\n")[0]}`));
          }
        }
        let pruned: PruneReport | undefined;
        if (lock) {
          const pool = new CodecPool(vault.master);
          try {
            pruned = await pruneVault(vault, pool, { dryRun, lock });
          } finally {
            await pool.close();
          }
        }
        const text = [
          `${dryRun ? "would keep" : "kept"} ${plural(keep.size, "point")}, ${dryRun ? "would remove" : "removed"} ${remove.length}`,
          ...remove.map((p) => `  ${dryRun ? "would remove" : "removed"} ${p.id.slice(0, 12)} ${p.time} ${p.source.path}`),
          ...(pruned ? [`prune: ${plural(pruned.packsDeleted, "pack")} deleted, ${pruned.packsRepacked} repacked, ${formatBytes(pruned.bytesFreed)} freed`] : []),
          ...(held.length ? [`kept for now (immutable or not deletable):`, ...held.map((h) => `  ${h}`)] : []),
        ].join("\n");
        print(values, { keep: [...keep], remove: remove.map((p) => p.id), held, dryRun, prune: pruned }, text);
      } finally {
        await lock?.release().catch(() => {});
      }
    },
  },

  prune: {
    usage: "prune --vault V [--dry-run] [--json]",
    summary: "delete the data no point needs and repack what is mostly unused",
    options: { ...common, "dry-run": { type: "boolean", help: "say what would be deleted, delete nothing" } },
    async run(values) {
      const provider = await keyProvider(values);
      const store = (await openStore(vaultOf(values))).store;
      await removeDeadLocksOfThisHost(store); // a killed run of ours on this host must not block it
      const dryRun = values["dry-run"] === true;
      const lock = await VaultLock.acquire(store, dryRun ? "shared" : "exclusive", "prune");
      try {
        const vault = await Vault.open(store, provider);
        const pool = new CodecPool(vault.master);
        try {
          const report = await pruneVault(vault, pool, { dryRun, lock });
          print(values, report, `${dryRun ? "would delete" : "deleted"} ${plural(report.packsDeleted + report.unindexedPacksDeleted, "pack")}, repacked ${report.packsRepacked}, ${formatBytes(report.bytesFreed)} ${dryRun ? "to free" : "freed"}${report.kept.length ? `\nkept for now:\n  ${report.kept.join("\n  ")}` : ""}`);
        } finally {
          await pool.close();
        }
      } finally {
        await lock.release().catch(() => {});
      }
    },
  },

  key: {
    usage: "key list|add|remove|passwd|rotate --vault V [KEY-ID] [--new-passphrase-file F | --new-key-vault-key K] [--data] [--json]",
    summary:
      "list the vault's keys and data-key epochs, add a key, remove one (by id or unique prefix), change the passphrase you opened with, " +
      "rewrap Key Vault keys to their newest version, or (rotate --data) start a new data-key epoch",
    options: {
      ...common,
      data: { type: "boolean", help: "key rotate: a new random data key seals new data from now on (older points stay readable); key list: the data-key epochs only" },
      "new-passphrase-file": { type: "string", value: "F", help: "key add/passwd: the new passphrase from F (or BULWARK_NEW_PASSPHRASE)" },
      "new-key-vault-key": { type: "string", value: "K", help: "key add/passwd: the new key is the Key Vault key K" },
    },
    async run(values, positionals) {
      const action = keyAction(positionals[0]); // a mistyped action is named before the vault is opened
      if (values.data && action !== "rotate" && action !== "list") throw new UsageError("--data goes with `key rotate` (a new data-key epoch) or `key list` (the epochs)");
      const vault = await openVault(values, { loadIndex: false });
      const newProvider = (): Promise<KeyEncryptionKeyProvider> =>
        values["new-key-vault-key"]
          ? keyVaultProvider(values["new-key-vault-key"] as string)
          : readPassphrase({ file: values["new-passphrase-file"] as string | undefined, env: "BULWARK_NEW_PASSPHRASE", flag: "--new-passphrase-file" });
      const digest = configDigest(await vault.store.get("config"));
      switch (action) {
        case "list": {
          // --json keeps its one array of key objects (scripts read it); --data lists the epochs instead.
          if (values.data) {
            const epochs = epochRows(vault);
            print(values, epochs, epochRowsText(epochs));
            return;
          }
          const keys = await listKeyObjects(vault.store);
          const rows = keys.map((k) => ({ id: k.id, kind: k.kind, created: k.created, current: k.id === vault.keyObject.id, keyId: k.params.keyId }));
          const keyLines = rows.map((k) => `${k.current ? "*" : " "} ${k.id}  ${k.kind.padEnd(15)}  ${k.created}${k.keyId ? `  ${k.keyId}` : ""}`);
          print(values, rows, [...keyLines, "", epochRowsText(epochRows(vault))].join("\n"));
          return;
        }
        case "add": {
          const added = await writeKeyObject(vault.store, await newProvider(), vault.master, digest);
          print(values, { id: added.id }, `added key ${added.id}`);
          return;
        }
        case "passwd": {
          const added = await writeKeyObject(vault.store, await newProvider(), vault.master, digest);
          await vault.store.delete(`keys/${vault.keyObject.id}`);
          print(values, { id: added.id, removed: vault.keyObject.id }, `changed the passphrase: new key ${added.id}, removed ${vault.keyObject.id}`);
          return;
        }
        case "rotate": {
          if (values.data) {
            const made = await rotateDataKey(vault);
            print(
              values,
              { epoch: made.epoch, keyId: made.keyId, name: made.name },
              `made data-key epoch ${made.epoch} (key ${made.keyId}): new chunks and metadata are sealed under it from now on; ` +
                "every key of the vault opens it, and every older point stays readable",
            );
            return;
          }
          // Rewrap every Key Vault key object whose key has a newer version: a new key object, then the old one goes.
          const rotated: { from: string; to: string; id: string }[] = [];
          for (const keyObject of await listKeyObjects(vault.store)) {
            if (keyObject.kind !== "azure-key-vault") continue;
            const stored = String(keyObject.params.keyId);
            const versionless = stored.split("/").slice(0, 5).join("/");
            const provider = await keyVaultProvider(versionless);
            const newest = await provider.currentVersionId();
            if (newest === stored) continue;
            const added = await writeKeyObject(vault.store, provider, vault.master, digest);
            await vault.store.delete(`keys/${keyObject.id}`);
            rotated.push({ from: stored, to: String(added.params.keyId), id: added.id });
          }
          print(values, { rotated }, rotated.length ? rotated.map((r) => `rewrapped with ${r.to} (key ${r.id})`).join("\n") : "every Key Vault key object already uses its key's newest version");
          return;
        }
        case "remove": {
          // By name, without reading the others: a damaged key object must be removable too.
          const keyId = await resolveKeyId(vault.store, positionals[1]);
          if (keyId === vault.keyObject.id) throw new UsageError("that is the key you opened the vault with; open it with another key to remove this one");
          await vault.store.delete(`keys/${keyId}`);
          print(values, { removed: keyId }, `removed key ${keyId}`);
          return;
        }
      }
    },
  },

  agent: {
    group: "agents",
    usage: "agent schedule [--policies P] [--agent-regions a,b] [--json]",
    summary: "one scheduler tick: enqueue due items per region",
    forms: [
      { usage: "agent worker [--region R] [--max-jobs N] [--until-drained] [--json]", summary: "run queued jobs until the region's queue is empty" },
      { usage: "agent prune [--policies P] [--json]", summary: "each policy's retention, then prune, per vault" },
      { usage: "agent bridge [--json]", summary: "in-tenant inventory; retire snapshots nothing needs" },
    ],
    options: {
      json: common.json,
      policies: { type: "string", value: "P", help: "the policy file or folder (or BULWARK_POLICIES)" },
      "agent-regions": { type: "string", value: "a,b", help: "the regions that have agents" },
      region: { type: "string", value: "R", help: "the region whose queue a worker serves" },
      "max-jobs": { type: "string", value: "N", help: "how many jobs a worker runs at once (or BULWARK_MAX_JOBS_PER_WORKER; default 2)" },
      "until-drained": { type: "boolean", help: "exit only when the queue holds no message at all, retries and deferred jobs included" },
    },
    async run(values, positionals) {
      const { agentSchedule, agentWorker, agentPrune, agentBridge } = await import("./agent-commands.ts");
      const [role] = positionals;
      if (role === "schedule") {
        const result = await agentSchedule(values);
        const r = result as { enqueued: unknown[]; unprotected: { item: string; reason: string }[]; errors: { policy: string; error: string }[] };
        print(values, result, `enqueued ${plural(r.enqueued.length, "item")}${r.unprotected.length ? `; unprotected: ${r.unprotected.map((u) => `${u.item} (${u.reason})`).join(", ")}` : ""}${r.errors.length ? `; errors: ${r.errors.map((e) => `${e.policy}: ${e.error}`).join("; ")}` : ""}`);
        return r.errors.length > 0 ? 1 : 0;
      }
      if (role === "worker") {
        const summary = await agentWorker(values);
        print(values, summary, `worker ${summary.workerId}: ${summary.succeeded} succeeded, ${summary.failed} failed, ${summary.poisoned} poisoned`);
        return 0;
      }
      if (role === "prune") {
        const result = await agentPrune(values);
        const vaults = result.vaults as { vault: string; removedPoints: number; held: string[]; prune: { packsDeleted: number; bytesFreed: number } }[];
        print(values, result, vaults.map((v) => `${v.vault}: ${plural(v.removedPoints, "point")} removed, ${plural(v.prune.packsDeleted, "pack")} deleted, ${formatBytes(v.prune.bytesFreed)} freed${v.held.length ? `, ${v.held.length} kept (immutable)` : ""}`).join("\n"));
        return 0;
      }
      if (role === "bridge") {
        const report = (await agentBridge()) as { scopes: { scope: string; items: number; outOfRegion: unknown[] }[]; snapshots: { retired: string[] }[]; errors: string[] };
        print(
          values,
          report,
          [
            ...report.scopes.map((s) => `${s.scope}: ${s.items} protectable resources${s.outOfRegion.length ? `, ${s.outOfRegion.length} outside the scope's region` : ""}`),
            `snapshots retired: ${report.snapshots.reduce((n, s) => n + s.retired.length, 0)}`,
            ...report.errors.map((e) => `ERROR: ${e}`),
          ].join("\n"),
        );
        return report.errors.length > 0 ? 8 : 0;
      }
      throw new UsageError("give the agent's role: bulwark agent schedule|worker|prune|bridge");
    },
  },

  jobs: {
    group: "agents",
    usage: "jobs [--limit N] [--json]",
    summary: "recent jobs and their state",
    options: { json: common.json, limit: { type: "string", value: "N", help: "show the N most recent jobs (default 20)" } },
    async run(values) {
      const { jobsList } = await import("./agent-commands.ts");
      const { jobRows, jobsText } = await import("./jobs-view.ts");
      const rows = jobRows(await jobsList(values));
      print(values, rows, jobsText(rows));
    },
  },

  status: {
    group: "agents",
    usage: "status [--policies P] [--json]",
    summary: "every item the policies protect (never backed up ones too): ok, at risk, missed or never; its RPO, the age of its last good point, copy lag",
    options: { json: common.json, policies: { type: "string", value: "P", help: "the policy file or folder (or BULWARK_POLICIES)" } },
    async run(values) {
      const { statusList } = await import("./agent-commands.ts");
      const { statusText } = await import("./status-view.ts");
      const rows = await statusList(values);
      print(values, rows, statusText(rows));
    },
  },

  console: {
    group: "agents",
    usage: "console [--listen HOST:PORT] [--policies P] [--allow-remote] [--auth token|entra]",
    summary: "the web console: protected items and their RPO, jobs, vaults, agents; restores become agent jobs. Serves until Ctrl-C",
    options: {
      listen: { type: "string", value: "HOST:PORT", help: "where to serve (default 127.0.0.1 and a free port); a non-loopback address needs --allow-remote" },
      policies: { type: "string", value: "P", help: "the policy file or folder (or BULWARK_POLICIES)" },
      "allow-remote": { type: "boolean", help: "allow a non-loopback --listen (the deployed console, behind Container Apps authentication)" },
      auth: { type: "string", value: "token|entra", help: "token: the printed URL's one-time token (default); entra: trust Container Apps' Entra ID sign-in headers" },
    },
    async run(values) {
      const { fleetConnection, policies } = await import("./agent-commands.ts");
      const { runConsole } = await import("../console/command.ts");
      return runConsole(values, { connection: fleetConnection, prefix: process.env.BULWARK_FLEET_PREFIX || undefined, policies: () => policies(values) });
    },
  },

  completion: {
    usage: "completion bash|zsh",
    summary: "a shell completion script for commands, subcommands and options (bash: source <(bulwark completion bash))",
    options: {},
    async run(_values, positionals) {
      const { completionScript } = await import("./completion.ts");
      const [shell, extra] = positionals;
      if (extra !== undefined) throw new UsageError("give one shell: bulwark completion bash|zsh");
      process.stdout.write(completionScript(shell, commands));
    },
  },

  unlock: {
    usage: "unlock --vault V [--json]",
    summary: "remove lock objects left by killed processes",
    options: common,
    async run(values) {
      const vault = await openVault(values, { loadIndex: false });
      const removed = await removeAllLocks(vault.store);
      print(values, { removed }, `removed ${plural(removed, "lock object")}`);
    },
  },
};
