/**
 * Help, README's command table and the parser cannot drift: every option the parser takes has a
 * help line and is on a usage line (or the one line naming the key options), every usage line is
 * in README's table and in the global help, and README names no command or flag the parser lacks.
 * `help X`, `X --help` and `X -h` print the command's help; mistyped commands and options get one
 * line naming the closest valid one, exit 2.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { commands } from "../../runtime/cli/commands.ts";
import { commandHelp, formsOf, globalHelp, KEY_OPTIONS, KEY_OPTIONS_LINE } from "../../runtime/cli/help.ts";
import { parseCommandLine } from "../../runtime/cli/parse.ts";
import { UsageError } from "../../runtime/errors.ts";
import { runCli } from "../support/cli.ts";

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../README.md");

/** Runs of whitespace as one space: help pads and wraps, README aligns. */
function normalized(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function flagsIn(text: string): Set<string> {
  return new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]));
}

/**
 * README's table (the ``` block under "## The command line") as one entry per `bulwark` line:
 * indented lines continue the line above, a trailing "  (…)" is a remark, "#" lines are notes.
 */
async function readmeTable(): Promise<{ lines: string[]; notes: string[] }> {
  const readme = await readFile(README, "utf8");
  const start = readme.indexOf("## The command line");
  expect(start, "README has a section \"## The command line\"").toBeGreaterThan(0);
  const open = readme.indexOf("```\n", start) + 4;
  const block = readme.slice(open, readme.indexOf("```", open));
  const lines: string[] = [];
  const notes: string[] = [];
  for (const raw of block.split("\n")) {
    const text = raw.replace(/\s{2,}\(.*\)\s*$/, "");
    if (!text.trim()) continue;
    if (text.startsWith("#")) notes.push(text.slice(1).trim());
    else if (/^\s/.test(text) && lines.length) lines[lines.length - 1] += ` ${text.trim()}`;
    else lines.push(normalized(text));
  }
  return { lines, notes };
}

describe("help comes from the parser's own table", () => {
  test("every option of every command has a help text, and the command's help shows it", () => {
    for (const [name, command] of Object.entries(commands)) {
      const help = commandHelp(command);
      for (const [option, def] of Object.entries(command.options)) {
        expect(def.help, `${name} --${option} has no help text`).toMatch(/\w/);
        expect(help, `bulwark help ${name} lacks --${option}`).toContain(`--${option}`);
        if (def.type === "string") expect(def.value, `${name} --${option} names no value`).toMatch(/\S/);
      }
    }
  });

  test("every option is on one of its command's usage lines, or is a key option named once for all", () => {
    for (const [name, command] of Object.entries(commands)) {
      expect(command.usage.split(" ")[0], `${name}'s usage starts with its name`).toBe(name);
      const onUsage = flagsIn(formsOf(command).map((f) => f.usage).join(" "));
      for (const option of Object.keys(command.options)) {
        if ((KEY_OPTIONS as readonly string[]).includes(option)) continue;
        expect(onUsage.has(option), `bulwark ${name}: --${option} is on no usage line`).toBe(true);
      }
      for (const flag of onUsage) expect(Object.hasOwn(command.options, flag), `bulwark ${name}'s usage names --${flag}, which the parser lacks`).toBe(true);
    }
  });

  test("the global help lists every usage line of every command, with the key options, exit codes and environment", () => {
    const help = normalized(globalHelp(commands));
    for (const command of Object.values(commands)) {
      for (const form of formsOf(command)) expect(help, form.usage).toContain(normalized(form.usage));
    }
    expect(help).toContain(KEY_OPTIONS_LINE);
    for (const words of ["Exit codes: 0 ok", "8 storage or Azure service failure", "BULWARK_PASSPHRASE", "BULWARK_VAULT", "AZURE_STORAGE_CONNECTION_STRING"]) {
      expect(help).toContain(words);
    }
  });

  test("README's command table has every usage line of the parser's table, and no command or flag it lacks", async () => {
    const { lines, notes } = await readmeTable();
    for (const command of Object.values(commands)) {
      for (const form of formsOf(command)) expect(lines, `README lacks: bulwark ${form.usage}`).toContain(`bulwark ${normalized(form.usage)}`);
    }
    expect(notes).toContain(KEY_OPTIONS_LINE);
    for (const line of lines) {
      const [, name] = line.split(" ");
      if (name === "help") continue;
      expect(Object.hasOwn(commands, name), `README names a command the parser lacks: ${line}`).toBe(true);
      for (const flag of flagsIn(line)) expect(Object.hasOwn(commands[name].options, flag), `README: bulwark ${name} --${flag} is not an option`).toBe(true);
    }
  });
});

describe("asking for help", () => {
  test("`help X`, `X --help` and `X -h` (also after other arguments) give the command's help, exit 0", () => {
    for (const argv of [["help", "backup"], ["backup", "--help"], ["restore", "-h"], ["agent", "worker", "--help"], ["points", "--vault", "V", "-h"]]) {
      const line = parseCommandLine(argv, commands);
      const name = argv[0] === "help" ? argv[1] : argv[0];
      expect(line, argv.join(" ")).toEqual({ kind: "help", text: commandHelp(commands[name]), exitCode: 0 });
    }
  });

  test("`help`, `--help` and `-h` give the global help, exit 0; no command at all exits 2", () => {
    for (const argv of [["help"], ["--help"], ["-h"]]) expect(parseCommandLine(argv, commands)).toEqual({ kind: "help", text: globalHelp(commands), exitCode: 0 });
    expect(parseCommandLine([], commands)).toMatchObject({ kind: "help", exitCode: 2 });
  });

  test("--help after `--` is a positional, not a request for help", () => {
    expect(parseCommandLine(["backup", "--vault", "V", "--", "--help"], commands)).toMatchObject({ kind: "run", name: "backup", positionals: ["--help"] });
  });

  test("the real command prints the help on stdout with exit 0 for `backup --help` and `help agent`", async () => {
    const [backup, agent] = await Promise.all([runCli(["backup", "--help"]), runCli(["help", "agent"])]);
    expect(backup).toMatchObject({ code: 0, stderr: "", stdout: commandHelp(commands.backup) });
    expect(agent).toMatchObject({ code: 0, stderr: "", stdout: commandHelp(commands.agent) });
    expect(agent.stdout).toContain("agent bridge");
  });
});

describe("mistyped commands and options", () => {
  function usageMessage(argv: string[]): string {
    try {
      parseCommandLine(argv, commands);
    } catch (error) {
      expect(error).toBeInstanceOf(UsageError);
      return (error as Error).message;
    }
    throw new Error(`bulwark ${argv.join(" ")} parsed`);
  }

  test("a mistyped command names the closest one", () => {
    expect(usageMessage(["backpu"])).toBe('unknown command "backpu"; did you mean `bulwark backup`?');
    expect(usageMessage(["restor", "latest"])).toBe('unknown command "restor"; did you mean `bulwark restore`?');
    expect(usageMessage(["help", "pionts"])).toBe('unknown command "pionts"; did you mean `bulwark points`?');
  });

  test("a command nothing is close to points at the list", () => {
    expect(usageMessage(["snapshot"])).toBe('unknown command "snapshot"; run `bulwark help` for the list');
  });

  test("a mistyped option names the closest option of that command", () => {
    expect(usageMessage(["points", "--vualt", "X"])).toBe("unknown option --vualt; did you mean --vault?");
    expect(usageMessage(["forget", "--vault", "V", "--keep-dialy", "7"])).toBe("unknown option --keep-dialy; did you mean --keep-daily?");
    expect(usageMessage(["restore", "latest", "--overwrit"])).toBe("unknown option --overwrit; did you mean --overwrite?");
    expect(usageMessage(["verify", "--read-data=1"])).toBe("--read-data takes no value");
  });

  test("an option of another command, or nothing close, points at the command's help", () => {
    expect(usageMessage(["forget", "--keep-within", "7d"])).toBe("unknown option --keep-within; see `bulwark help forget`");
    expect(usageMessage(["ls", "latest", "-x"])).toBe("unknown option -x; see `bulwark help ls`");
  });

  test("an option without its value says which value it needs", () => {
    expect(usageMessage(["points", "--vault"])).toBe("--vault needs a value: --vault V");
    expect(usageMessage(["backup", "f", "--vault", "--json"])).toBe('--vault needs a value: --vault V (a value starting with "-" is written --vault=--json)');
  });

  test("the real command answers a mistyped option with one line on stderr and exit 2, as JSON with --json", async () => {
    const [text, json] = await Promise.all([runCli(["points", "--vualt", "X"]), runCli(["backpu", "--json"])]);
    expect(text).toMatchObject({ code: 2, stdout: "", stderr: "bulwark points: unknown option --vualt; did you mean --vault?\n" });
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr)).toEqual({ error: 'unknown command "backpu"; did you mean `bulwark backup`?', code: "usage", exitCode: 2 });
  });
});
