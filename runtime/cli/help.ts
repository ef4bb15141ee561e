/**
 * Help, generated from the command table the parser uses (runtime/cli/commands.ts): each command's
 * usage lines, summary and options, so help cannot name a flag the parser lacks or miss one it has.
 * README's command table carries the same usage lines (test/cli/help.test.ts compares them).
 */
import type { Command, CommandForm, OptionDef } from "./commands.ts";

/** Where a summary starts on a global help line, and how wide lines may run. */
const SUMMARY_COLUMN = 46;
const WIDTH = 110;

/** The options every vault command takes that its usage line leaves out: help names them once. */
export const KEY_OPTIONS = ["passphrase-file", "key-vault-key"] as const;
export const KEY_OPTIONS_LINE = "every vault command also takes [--passphrase-file F | --key-vault-key K]";

const KEY_AND_EXIT_CODES = `The vault key: a recovery passphrase of at least 16 characters, from BULWARK_PASSPHRASE or
--passphrase-file F (never stored), or the customer's Key Vault key (--key-vault-key K or
BULWARK_KEY_VAULT_KEY) when no passphrase is given. For key add/passwd the new one comes from
BULWARK_NEW_PASSPHRASE, --new-passphrase-file F or --new-key-vault-key K.
The vault: --vault V or BULWARK_VAULT. Azure Blob vaults use AZURE_STORAGE_CONNECTION_STRING if set,
else the Azure default credential chain (AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET,
a managed identity, or az login).

Exit codes: 0 ok, 1 failure, 2 bad usage, 3 wrong key, 4 not found, 5 damaged data,
6 unreadable source, 7 vault busy, 8 storage or Azure service failure (credentials included),
130 interrupted (Ctrl-C, SIGINT), 143 stopped by SIGTERM: what the command held is released.
`;

/** Words laid out in lines of at most `width` characters, the first after `first`, the others after `indent`. */
function wrap(text: string, first: string, indent: string, width = WIDTH): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent;
      empty = true;
    }
    line += `${empty ? "" : " "}${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}

/** `  backup   SOURCE --vault V ...   back up ...`: the summary beside a short usage, under a long one. */
function formLines(form: CommandForm): string[] {
  const [name, ...rest] = form.usage.split(" ");
  const usage = wrap(rest.join(" "), `  ${name.padEnd(8)} `, " ".repeat(11));
  const last = usage[usage.length - 1];
  if (last.length + 2 <= SUMMARY_COLUMN) {
    const summary = wrap(form.summary, last.padEnd(SUMMARY_COLUMN), " ".repeat(SUMMARY_COLUMN));
    return [...usage.slice(0, -1), ...summary];
  }
  return [...usage, ...wrap(form.summary, " ".repeat(SUMMARY_COLUMN), " ".repeat(SUMMARY_COLUMN))];
}

export function formsOf(command: Command): CommandForm[] {
  return [command, ...(command.forms ?? [])];
}

export function globalHelp(commands: Record<string, Command>): string {
  const listed = (agents: boolean) =>
    Object.values(commands)
      .filter((c) => (c.group === "agents") === agents)
      .flatMap((c) => formsOf(c).flatMap(formLines));
  return [
    "bulwark: encrypted, deduplicated backups of disks, files, Azure VMs and Azure SQL",
    "",
    "Usage: bulwark COMMAND [options]; `bulwark help COMMAND` (or COMMAND --help) shows a command's options",
    "",
    "Vault:",
    ...listed(false),
    `  (${KEY_OPTIONS_LINE})`,
    "",
    "Agents (Container Apps jobs; configuration from the environment, see infra/README.md):",
    ...listed(true),
    "",
    KEY_AND_EXIT_CODES,
  ].join("\n");
}

/** `--tag k=v`, `-l, --long`. */
function optionName(name: string, option: OptionDef): string {
  return `${option.short ? `-${option.short}, ` : ""}--${name}${option.value ? ` ${option.value}` : ""}`;
}

export function commandHelp(command: Command): string {
  const options = Object.entries(command.options).map(([option, def]) => {
    const label = `  ${optionName(option, def)}`;
    const help = `${def.help ?? ""}${def.multiple ? " (repeatable)" : ""}`;
    return label.length + 2 <= 30 ? label.padEnd(30) + help : `${label}\n${" ".repeat(30)}${help}`;
  });
  return [
    ...formsOf(command).flatMap((form) => [`bulwark ${form.usage}`, ...wrap(form.summary, "  ", "  "), ""]),
    "Options:",
    ...options,
    "",
    `Exit codes: see \`bulwark help\`; run \`bulwark help\` for every command.`,
    "",
  ].join("\n");
}
