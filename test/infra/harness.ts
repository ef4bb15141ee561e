/**
 * Runs Bulwark's Pulumi program under the Pulumi SDK's mocks and records every resource it
 * registers, both what the program sent (inputs) and what Azure would return after the create
 * (state: outputs only, shaped as Azure shapes them, see azure-outputs.ts).
 *
 * Import this module before any module that creates resources: it installs the mocks.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import * as pulumi from "@pulumi/pulumi";
import { parse } from "yaml";
import { rawFromPulumiConfig } from "../../infra/config.ts";
import { azureState } from "./azure-outputs.ts";

export interface RecordedResource {
  type: string;
  name: string;
  urn: string;
  id: string;
  /** What the program sent. */
  inputs: Record<string, any>;
  /** What Azure returns after the create: the resource's state after `pulumi up` (no input-only properties). */
  state: Record<string, any>;
  /** Input paths (e.g. "configuration.secrets[0].value") that the program sent as Pulumi secrets. */
  secretPaths: string[];
}

/** The signature key and value with which the engine marks a secret in serialized inputs. */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270";

/** Replaces each serialized secret with its value and lists where the secrets were. */
function unwrapSecrets(value: any, path: string, secretPaths: string[]): any {
  if (Array.isArray(value)) return value.map((v, i) => unwrapSecrets(v, `${path}[${i}]`, secretPaths));
  if (value === null || typeof value !== "object") return value;
  if (value[SECRET_SIG] === SECRET_SIG_VALUE) {
    secretPaths.push(path);
    return unwrapSecrets(value.value, path, []);
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unwrapSecrets(v, path ? `${path}.${k}` : k, secretPaths)]));
}

const recorded: RecordedResource[] = [];
let stackReferenceOutputs: Record<string, unknown> = {};

/** The principal and client ids Azure gave an identity the program created, by its id. */
function identityById(id: string): { principalId: string; clientId: string } | undefined {
  const identity = recorded.find((r) => r.type === "azure-native:managedidentity:UserAssignedIdentity" && r.id.toLowerCase() === id.toLowerCase());
  return identity && { principalId: identity.state.principalId, clientId: identity.state.clientId };
}

pulumi.runtime.setMocks(
  {
    newResource(args: pulumi.runtime.MockResourceArgs): { id: string; state: Record<string, any> } {
      if (args.type === "pulumi:pulumi:StackReference") {
        return { id: args.inputs.name ?? args.name, state: { name: args.inputs.name, outputs: stackReferenceOutputs, secretOutputNames: [] } };
      }
      const secretPaths: string[] = [];
      const inputs = unwrapSecrets(args.inputs, "", secretPaths) as Record<string, any>;
      const { id, state } = azureState(args.type, args.name, inputs, identityById);
      const urn = `urn:pulumi:test::bulwark::${args.type}::${args.name}`;
      recorded.push({ type: args.type, name: args.name, urn, id, inputs, state, secretPaths });
      return { id, state };
    },
    call(args: pulumi.runtime.MockCallArgs): Record<string, any> {
      if (args.token === "azure-native:operationalinsights:getSharedKeys") {
        return { primarySharedKey: "mock-shared-key", secondarySharedKey: "mock-shared-key-2" };
      }
      throw new Error(`unexpected invoke ${args.token}`);
    },
  },
  "bulwark",
  "test",
  false,
);

export function recordedResources(): RecordedResource[] {
  return [...recorded];
}

export function clearRecorded(): void {
  recorded.length = 0;
}

/** What the StackReference to the customer stack returns. */
export function setCustomerStackOutputs(outputs: Record<string, unknown>): void {
  stackReferenceOutputs = outputs;
}

/** The value of an Output (or a plain value). */
export function resolve<T>(value: pulumi.Input<T>): Promise<T> {
  return new Promise((done) => pulumi.output(value).apply((v) => done(v as T)));
}

/** Resolves every Output of an object of outputs (one level). */
export async function resolveAll(outputs: object): Promise<Record<string, unknown>> {
  const entries = await Promise.all(Object.entries(outputs).map(async ([k, v]) => [k, await resolve(v)] as const));
  return Object.fromEntries(entries);
}

/**
 * The Pulumi SDK's record of outstanding resource registrations and invokes: each one chains
 * itself onto `settings.rpcDone` (runtime/settings rpcKeepAlive), which `disconnect` waits on
 * before closing. Internal to the SDK (not in its typings), so reached through its module.
 */
const pulumiState = createRequire(import.meta.url)("@pulumi/pulumi/runtime/state") as { getStore(): { settings: { rpcDone: Promise<unknown> } } };

/**
 * Waits until no more resources are being registered: every registration the SDK started has
 * finished, and a full turn of the event loop later none has started (a resource made in an
 * apply of another's outputs starts as soon as that registration finished).
 */
export async function settled(): Promise<RecordedResource[]> {
  for (;;) {
    const done = pulumiState.getStore().settings.rpcDone;
    await done;
    await new Promise((r) => setImmediate(r));
    if (pulumiState.getStore().settings.rpcDone === done) return recordedResources();
  }
}

/** The `bulwark:*` config of an example stack file, passed the way Pulumi passes config to a program. */
export function exampleConfig(file: string): { raw: Record<string, unknown>; secretKeys: Set<string> } {
  const yaml = parse(readFileSync(new URL(`../../${file}`, import.meta.url), "utf8")) as { config: Record<string, unknown> };
  const flat: Record<string, string> = {};
  for (const [key, value] of Object.entries(yaml.config)) flat[key] = typeof value === "string" ? value : JSON.stringify(value);
  return rawFromPulumiConfig(flat, () => false);
}

export function ofType(resources: RecordedResource[], type: string): RecordedResource[] {
  return resources.filter((r) => r.type === type);
}
