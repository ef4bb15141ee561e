/**
 * `bulwark completion bash|zsh`: a shell completion script generated from the command table the
 * parser uses (commands.ts), so it completes exactly the commands, subcommands and options the
 * parser takes. Options whose value is a local path (a passphrase file, a vault folder, a policy
 * file) complete file names; options with a fixed set of values (`--as disk|file`) complete those.
 * zsh runs the same function through its bash compatibility (bashcompinit).
 */
import { UsageError } from "../errors.ts";
import type { Command, OptionDef } from "./commands.ts";
import { formsOf } from "./help.ts";

/** Value names that stand for a local path (or a URL, which completes as typed). */
const PATH_VALUES = new Set(["F", "P", "V", "V1", "V2", "DIR", "FOLDER", "TARGET", "SOURCE", "AZURE-VAULT"]);

/** A word the shell can hold unquoted: command, option and value names are all of this form. */
const PLAIN_WORD = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** `list|add|remove` right after the command's name on a usage line: its subcommands. */
function subcommandsOf(command: Command): string[] {
  const words = formsOf(command).flatMap((form) => {
    const second = form.usage.split(" ")[1] ?? "";
    return /^[a-z]+(\|[a-z]+)*$/.test(second) ? second.split("|") : [];
  });
  return [...new Set(words)];
}

/** The fixed values an option takes (`disk|file`); none when its value is free (`N`, `k=v`). */
function choicesOf(def: OptionDef): string[] {
  const value = def.value ?? "";
  if (!value.includes("|")) return [];
  return value.split("|").filter((word) => /^[a-z]+$/.test(word));
}

function words(list: Iterable<string>): string {
  const all = [...list];
  for (const word of all) if (!PLAIN_WORD.test(word.replace(/^--?/, ""))) throw new Error(`completion: ${JSON.stringify(word)} is not a plain word`);
  return all.join(" ");
}

/** The case arms for an option's value: files, fixed choices, or nothing (free text). */
function valueArms(commands: Record<string, Command>): string[] {
  const arms: string[] = [];
  for (const [name, command] of Object.entries(commands)) {
    for (const [option, def] of Object.entries(command.options)) {
      if (def.type !== "string") continue;
      const choices = choicesOf(def);
      const action = choices.length
        ? `COMPREPLY=( $(compgen -W "${words(choices)}" -- "$cur") )`
        : PATH_VALUES.has(def.value ?? "")
          ? `COMPREPLY=( $(compgen -f -- "$cur") )`
          : "COMPREPLY=()";
      arms.push(`      ${name}:--${option}) ${action}; return 0 ;;`);
    }
  }
  return arms;
}

/** The bash function: the command, then its subcommand, an option, an option's value, or a file. */
export function bashFunction(commands: Record<string, Command>): string {
  const names = Object.keys(commands);
  const optionArms = Object.entries(commands).map(([name, command]) => `      ${name}) COMPREPLY=( $(compgen -W "${words(Object.keys(command.options).map((o) => `--${o}`))} --help" -- "$cur") ) ;;`);
  const subcommandArms = Object.entries(commands).flatMap(([name, command]) => {
    const subs = subcommandsOf(command);
    return subs.length ? [`        ${name}) COMPREPLY=( $(compgen -W "${words(subs)}" -- "$cur") ); return 0 ;;`] : [];
  });
  return `_bulwark() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local commands="${words(names)}"
  if [[ $COMP_CWORD -le 1 ]]; then
    COMPREPLY=( $(compgen -W "$commands help --help --version" -- "$cur") )
    return 0
  fi
  local command="\${COMP_WORDS[1]}"
  if [[ "$command" == help ]]; then
    [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=( $(compgen -W "$commands" -- "$cur") )
    return 0
  fi
  if [[ "$prev" == --* ]]; then
    case "$command:$prev" in
${valueArms(commands).join("\n")}
    esac
  fi
  if [[ "$cur" == -* ]]; then
    case "$command" in
${optionArms.join("\n")}
    esac
    return 0
  fi
  if [[ $COMP_CWORD -eq 2 ]]; then
    case "$command" in
${subcommandArms.join("\n")}
    esac
  fi
  COMPREPLY=( $(compgen -f -- "$cur") )
  return 0
}`;
}

export function completionScript(shell: string | undefined, commands: Record<string, Command>): string {
  const fn = bashFunction(commands);
  if (shell === "bash") {
    return `# bulwark completion for bash: add to ~/.bashrc:  source <(bulwark completion bash)\n${fn}\ncomplete -o filenames -o bashdefault -F _bulwark bulwark\n`;
  }
  if (shell === "zsh") {
    return (
      `#compdef bulwark\n# bulwark completion for zsh: add to ~/.zshrc (after compinit):  source <(bulwark completion zsh)\n` +
      `autoload -U +X bashcompinit && bashcompinit\n${fn}\ncomplete -o filenames -F _bulwark bulwark\n`
    );
  }
  throw new UsageError(`give the shell: bulwark completion bash|zsh${shell === undefined ? "" : ` (not ${JSON.stringify(shell)})`}`);
}
