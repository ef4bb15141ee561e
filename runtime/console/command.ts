/**
 * `bulwark console [--listen HOST:PORT] [--policies P] [--allow-remote] [--auth token|entra]`: the
 * web console over the fleet's state, configured from the environment as the agents are (the
 * fleet's storage, the policies, the vault key; cli/agent-commands.ts), serving until Ctrl-C.
 */
import { isIP } from "node:net";
import { UsageError } from "../errors.ts";
import { interrupted } from "../interruption.ts";
import { azureContext, type AzureContext } from "../azure/context.ts";
import { Vault } from "../engine/vault.ts";
import { openStore } from "../store/open.ts";
import { agentKeyProvider } from "../workloads/environment.ts";
import { openFleet, type Fleet } from "../jobs/submit.ts";
import { systemClock } from "../jobs/clock.ts";
import type { StorageConnection } from "../jobs/storage.ts";
import type { Policy } from "../policy/policy.ts";
import { AccessControl, type AuthMode } from "./access.ts";
import { agentJobsFromEnv, readAgents } from "./agents.ts";
import { ExistingFleetStorage } from "./fleet-storage.ts";
import { vaultOpener, type ConsoleSources } from "./fleet-view.ts";
import { ConsoleApp, type RunningConsole } from "./server.ts";

export interface ListenAddress {
  host: string;
  port: number;
  loopback: boolean;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

/** `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`, or a port alone (on 127.0.0.1). */
export function parseListen(text: string | undefined): ListenAddress {
  const value = text ?? "127.0.0.1:0";
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value) ?? /^()()(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new UsageError(`--listen ${value} is not HOST:PORT (for example 127.0.0.1:8470, or a port alone)`);
  const host = match[1] || match[2] || "127.0.0.1";
  if (host !== "localhost" && isIP(host) === 0) throw new UsageError(`--listen ${value}: give an IP address (or localhost), not a name that could resolve elsewhere`);
  return { host, port, loopback: isLoopback(host) };
}

export interface ConsoleSettings {
  listen: ListenAddress;
  auth: AuthMode;
}

/** The listen address and authentication, refused where they would expose the console. */
export function consoleSettings(values: Record<string, unknown>): ConsoleSettings {
  const listen = parseListen(values.listen as string | undefined);
  const allowRemote = values["allow-remote"] === true;
  const auth = (values.auth as string | undefined) ?? "token";
  if (auth !== "token" && auth !== "entra") throw new UsageError(`--auth ${auth}: give token (the printed URL's token, the default) or entra (behind Container Apps authentication)`);
  if (!listen.loopback && !allowRemote) {
    throw new UsageError(`--listen ${listen.host}: the console binds to loopback unless --allow-remote is given (deployed, it runs behind Container Apps' Entra ID authentication with --auth entra)`);
  }
  if (auth === "entra" && listen.loopback) {
    throw new UsageError("--auth entra trusts Container Apps' authentication headers, which only its front end may set: use it in the Container App (with --allow-remote), not on loopback");
  }
  return { listen, auth };
}

export interface StartConsoleOptions {
  fleet: Fleet;
  policies: Policy[];
  settings: ConsoleSettings;
  env?: NodeJS.ProcessEnv;
  /** Replaces the Container Apps reads (tests). */
  readAgents?: ConsoleSources["readAgents"];
  openVault?: (location: string) => Promise<Vault>;
}

export interface StartedConsole extends RunningConsole {
  /** The URL to open: the console's address with the access token (token mode). */
  entryUrl: string;
  access: AccessControl;
}

/** Starts the console over a fleet with the vault key and agents of `env`. */
export async function startConsole(options: StartConsoleOptions): Promise<StartedConsole> {
  const env = options.env ?? process.env;
  // Azure credentials only when something needs them (a Key Vault key, the agents' jobs).
  let azure: Promise<AzureContext> | undefined;
  const azureOnce = () => (azure ??= azureContext(env));
  const agentJobs = agentJobsFromEnv(env);
  const sources: ConsoleSources = {
    fleet: options.fleet,
    policies: options.policies,
    openVault: vaultOpener(options.openVault ?? (async (location) => Vault.open((await openStore(location, env)).store, agentKeyProvider(env, await azureOnce())))),
    readAgents: options.readAgents ?? (async () => (agentJobs.length ? readAgents(agentJobs, { credential: (await azureOnce()).credential, armEndpoint: (await azureOnce()).armEndpoint }) : [])),
    now: () => Date.now(),
  };
  const access = new AccessControl(options.settings.auth);
  const running = await new ConsoleApp({ ...options.settings.listen, sources, access }).listen();
  const entryUrl = access.mode === "token" ? `${running.url}/?token=${access.token}` : running.url;
  return { ...running, entryUrl, access };
}

/** What the command opens once its own options are checked (cli/agent-commands.ts: the agents' configuration). */
export interface ConsoleOpeners {
  connection(): Promise<StorageConnection>;
  prefix: string | undefined;
  policies(): Promise<Policy[]>;
}

/** `bulwark console`: prints the URL to open, serves until Ctrl-C or SIGTERM, then closes. */
export async function runConsole(values: Record<string, unknown>, open: ConsoleOpeners): Promise<number> {
  const settings = consoleSettings(values);
  const fleet = await openFleet(new ExistingFleetStorage(await open.connection(), { prefix: open.prefix }), systemClock);
  const started = await startConsole({ fleet, policies: await open.policies(), settings });
  process.stdout.write(`console: ${started.entryUrl}\n`);
  process.stderr.write(
    settings.auth === "token"
      ? "open that address in a browser (its token signs you in and is dropped from the address); Ctrl-C stops\n"
      : "signed-in users come through Container Apps authentication; Ctrl-C stops\n",
  );
  await interrupted();
  await started.close();
  return 0;
}
