/**
 * `npm test`: the type-check and the test suites, at the same time. The type-check is one thread
 * of about 30 CPU s; the suites leave part of the machine idle while they wait on servers and
 * child processes, so run one after the other the type-check only added to the wall time. The
 * command fails if either fails; arguments after `npm test --` go to vitest.
 */
import { spawn } from "node:child_process";
import path from "node:path";

const bin = (name: string) => path.resolve("node_modules/.bin", name);

function run(command: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: "inherit" });
    child.on("error", (error) => {
      console.error(`${path.basename(command)} did not start: ${error.message}`);
      resolve(1);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const [typecheck, suites] = await Promise.all([run(bin("tsc"), ["-p", "tsconfig.json"]), run(bin("vitest"), ["run", ...process.argv.slice(2)])]);
if (typecheck !== 0) console.error("npm test: the type-check failed (see tsc's messages above)");
process.exitCode = typecheck !== 0 ? typecheck : suites;
