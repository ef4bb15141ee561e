/**
 * The command line read against the command table: which command, its options and positionals, or
 * the help asked for. Mistakes are one UsageError line naming the closest valid command or option,
 * never the parser's own text.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError, describeError } from "../errors.ts";
import type { Command } from "./commands.ts";
import { commandHelp, globalHelp } from "./help.ts";
import { closest } from "./suggest.ts";

export type CommandLine =
  | { kind: "help"; text: string; exitCode: number }
  | { kind: "version" }
  | { kind: "run"; name: string; command: Command; values: Record<string, unknown>; positionals: string[] };

const HELP_FLAGS = new Set(["--help", "-h"]);

/** `; did you mean X?` when something is close, else where to look. */
function hint(suggestion: string | undefined, elsewhere: string): string {
  return suggestion ? `; did you mean ${suggestion}?` : `; ${elsewhere}`;
}

function commandNamed(name: string, commands: Record<string, Command>): Command {
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (command) return command;
  const suggestion = closest(name, Object.keys(commands));
  throw new UsageError(`unknown command "${name}"${hint(suggestion && `\`bulwark ${suggestion}\``, "run `bulwark help` for the list")}`);
}

/** The arguments before `--` (after it everything is a positional). */
function optionArgs(args: string[]): string[] {
  const end = args.indexOf("--");
  return end < 0 ? args : args.slice(0, end);
}

/**
 * Each option checked before the parser sees it: unknown ones named with the closest valid one,
 * a missing value or a value given to a switch said plainly.
 */
function checkOptions(name: string, command: Command, args: string[]): void {
  const options = command.options;
  const shorts = Object.values(options).flatMap((def) => (def.short ? [`-${def.short}`] : []));
  const unknown = (option: string, suggestion?: string) => new UsageError(`unknown option ${option}${hint(suggestion, `see \`bulwark help ${name}\``)}`);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const option = arg.slice(2, eq < 0 ? undefined : eq);
      const def = Object.hasOwn(options, option) ? options[option] : undefined;
      if (!def) throw unknown(`--${option}`, closest(`--${option}`, Object.keys(options).map((o) => `--${o}`)));
      if (def.type === "boolean" && eq >= 0) throw new UsageError(`--${option} takes no value`);
      if (def.type === "boolean" || eq >= 0) continue;
      const next = args[i + 1];
      if (next === undefined || next.startsWith("-")) {
        const dashed = next === undefined ? "" : ` (a value starting with "-" is written --${option}=${next})`;
        throw new UsageError(`--${option} needs a value: --${option} ${def.value ?? "VALUE"}${dashed}`);
      }
      i++; // its value
    } else if (arg.startsWith("-") && arg !== "-") {
      // A single letter is too short to guess from.
      for (const letter of arg.slice(1)) if (!shorts.includes(`-${letter}`)) throw unknown(`-${letter}`);
    }
  }
}

export function parseCommandLine(argv: string[], commands: Record<string, Command>): CommandLine {
  const [name, ...rest] = argv;
  if (name === undefined) return { kind: "help", text: globalHelp(commands), exitCode: 2 };
  if (HELP_FLAGS.has(name)) return { kind: "help", text: globalHelp(commands), exitCode: 0 };
  if (name === "--version") return { kind: "version" };
  if (name === "help") {
    const [topic, extra] = rest;
    if (topic === undefined) return { kind: "help", text: globalHelp(commands), exitCode: 0 };
    if (extra !== undefined) throw new UsageError("give one command: bulwark help COMMAND");
    return { kind: "help", text: commandHelp(commandNamed(topic, commands)), exitCode: 0 };
  }
  const command = commandNamed(name, commands);
  const options = optionArgs(rest);
  if (options.some((arg) => HELP_FLAGS.has(arg))) return { kind: "help", text: commandHelp(command), exitCode: 0 };
  checkOptions(name, command, options);
  try {
    const parsed = parseArgs({ args: rest, options: command.options, allowPositionals: true, strict: true } as ParseArgsConfig);
    return { kind: "run", name, command, values: parsed.values as Record<string, unknown>, positionals: parsed.positionals };
  } catch (error) {
    // What checkOptions lets through the parser should take; should it not, its message is still one line.
    throw new UsageError(`${describeError(error).split("\n")[0]}; see \`bulwark help ${name}\``);
  }
}
