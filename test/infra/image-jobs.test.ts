/**
 * The image and the jobs agree: for every Container Apps job the program registers, the program
 * its container starts exists in the image (on the base image's PATH, or a file the Dockerfile
 * copies from this repository) and its arguments parse with the real CLI's parser to an agent
 * role. The container's argv is worked out the way Container Apps (Kubernetes) combines a job's
 * `command`/`args` with the image's ENTRYPOINT/CMD (rules and sources in
 * data/container-apps-resources.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { ofType } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { commands } from "../../runtime/cli/commands.ts";
import { BASE_IMAGE_EXECUTABLES, isConsumptionPlanAllocation } from "./data/container-apps-resources.ts";

const root = path.resolve(import.meta.dirname, "../..");
const AGENT_ROLES = ["schedule", "worker", "prune", "bridge"];

interface Image {
  base: string;
  workdir: string;
  /** Image path → repository path, from the final stage's COPY lines (not --from another stage). */
  copies: { imagePath: string; repoPath: string }[];
  /** Removed from the image after copying (RUN rm -rf ...). */
  removed: string[];
  entrypoint: string[];
  cmd: string[];
}

/** The final stage of the Dockerfile: what the image holds and runs. */
function readDockerfile(text: string): Image {
  const stages = text.split(/^(?=FROM\s)/m).filter((s) => s.startsWith("FROM"));
  const last = stages[stages.length - 1];
  const image: Image = { base: /^FROM\s+(\S+)/.exec(last)![1], workdir: "/", copies: [], removed: [], entrypoint: [], cmd: [] };
  const resolve = (p: string) => path.posix.resolve(image.workdir, p);
  for (const line of last.split("\n").map((l) => l.trim())) {
    const [instruction, ...rest] = line.split(/\s+/);
    const argument = line.slice(instruction.length).trim();
    if (instruction === "WORKDIR") image.workdir = resolve(argument);
    if (instruction === "COPY" && !rest[0].startsWith("--from")) {
      const sources = rest.slice(0, -1);
      const destination = resolve(rest[rest.length - 1]);
      for (const source of sources) {
        image.copies.push({ imagePath: sources.length > 1 || destination.endsWith("/") ? path.posix.join(destination, path.posix.basename(source)) : destination, repoPath: source });
      }
    }
    if (instruction === "RUN") for (const match of argument.matchAll(/rm -rf ((?:\S+\s*)+)/g)) image.removed.push(...match[1].split(/\s+/).filter(Boolean).map(resolve));
    if (instruction === "ENTRYPOINT") image.entrypoint = JSON.parse(argument);
    if (instruction === "CMD") image.cmd = JSON.parse(argument);
  }
  return image;
}

/** Kubernetes' rule (data/container-apps-resources.ts): command replaces ENTRYPOINT and drops CMD; args alone replace CMD. */
function containerArgv(image: Image, container: { command?: string[]; args?: string[] }): string[] {
  if (container.command !== undefined) return [...container.command, ...(container.args ?? [])];
  return [...image.entrypoint, ...(container.args ?? image.cmd)];
}

/** The repository file an absolute image path holds, if the image has it. */
function repositoryFileAt(image: Image, imagePath: string): string | undefined {
  if (image.removed.some((r) => imagePath === r || imagePath.startsWith(`${r}/`))) return undefined;
  for (const { imagePath: copied, repoPath } of image.copies) {
    if (imagePath === copied || imagePath.startsWith(`${copied}/`)) {
      const file = path.join(root, repoPath, path.posix.relative(copied, imagePath));
      if (existsSync(file)) return file;
    }
  }
  return undefined;
}

/** What is wrong with running argv in the image, or undefined: the program exists and the CLI accepts the arguments. */
function problemRunning(image: Image, argv: string[]): string | undefined {
  const [program, ...rest] = argv;
  if (program.includes("/")) return `runs ${program}, a path the image does not give to a Node program`;
  if (!(program in BASE_IMAGE_EXECUTABLES) || !image.base.startsWith("node:")) return `runs "${program}", which is not on the image's PATH (only ${Object.keys(BASE_IMAGE_EXECUTABLES).join(", ")} from ${image.base})`;
  const [script, ...cliArgs] = rest;
  if (script === undefined || !script.startsWith("/")) return `runs node without the CLI's absolute path`;
  if (!repositoryFileAt(image, script)) return `runs node ${script}, which the image does not hold`;
  if (path.relative(root, repositoryFileAt(image, script)!) !== path.join("runtime", "cli", "main.ts")) return `runs node ${script}, which is not the bulwark CLI`;
  const [name, ...options] = cliArgs;
  const command = commands[name];
  if (!command) return `passes "${name}", which is not a bulwark command`;
  try {
    // Exactly how runtime/cli/main.ts parses a command's arguments.
    const parsed = parseArgs({ args: options, options: command.options, allowPositionals: true, strict: true } as ParseArgsConfig);
    if (name === "agent" && !AGENT_ROLES.includes(parsed.positionals[0])) return `passes agent role "${parsed.positionals[0]}", not one of ${AGENT_ROLES.join(", ")}`;
  } catch (error) {
    return `passes arguments the CLI refuses: ${(error as Error).message}`;
  }
  return undefined;
}

let image: Image;
let jobs: RecordedResource[];

beforeAll(async () => {
  image = readDockerfile(readFileSync(path.join(root, "Dockerfile"), "utf8"));
  const customer = await deployExampleCustomer();
  const region = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"));
  jobs = ofType([...customer.resources, ...region.resources], "azure-native:app:Job");
});

const containersOf = (job: RecordedResource): { name: string; command?: string[]; args?: string[]; resources: { cpu: number; memory: string } }[] => job.inputs.template.containers;

describe("the image and the jobs", () => {
  it("reads the Dockerfile's final stage: node base, /app, the runtime copied, the CLI as entry point", () => {
    expect(image.base).toMatch(/^node:24/);
    expect(image.workdir).toBe("/app");
    expect(image.copies).toContainEqual({ imagePath: "/app/runtime", repoPath: "runtime" });
    expect(image.entrypoint).toEqual(["node", "/app/runtime/cli/main.ts"]);
    expect(problemRunning(image, containerArgv(image, {}))).toBeUndefined();
  });

  it("sees a job that replaces the entry point with a program the image lacks (what `command: [\"bulwark\"]` did)", () => {
    expect(problemRunning(image, containerArgv(image, { command: ["bulwark"], args: ["agent", "worker"] }))).toMatch(/"bulwark", which is not on the image's PATH/);
    expect(problemRunning(image, containerArgv(image, { args: ["agent", "janitor"] }))).toMatch(/agent role "janitor"/);
    expect(problemRunning(image, containerArgv(image, { args: ["agent", "worker", "--no-such-flag"] }))).toMatch(/arguments the CLI refuses/);
  });

  it("every job (bridge, scheduler, worker, prune) runs the bulwark CLI the image holds, with arguments that parse to its agent role", () => {
    for (const job of jobs) {
      for (const container of containersOf(job)) {
        const argv = containerArgv(image, container);
        expect(problemRunning(image, argv), `${job.name}: ${argv.join(" ")}`).toBeUndefined();
        expect(argv.slice(2)).toEqual(["agent", container.name]);
      }
    }
    expect(jobs.map((j) => containersOf(j)[0].name).sort()).toEqual([...AGENT_ROLES].sort());
  });

  it("every job asks for a CPU and memory pair the Consumption plan allows", () => {
    for (const job of jobs) {
      for (const { resources } of containersOf(job)) expect(isConsumptionPlanAllocation(resources.cpu, resources.memory), `${job.name}: ${resources.cpu} CPU, ${resources.memory}`).toBe(true);
    }
  });
});
