/**
 * Deploys the example customer stack under mocks and hands its real outputs to the StackReference
 * that region stacks read, then clears the record so a test sees only region resources.
 */
import { clearRecorded, exampleConfig, resolveAll, setCustomerStackOutputs, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { parseCustomerConfig, parseRegionConfig } from "../../infra/config.ts";
import type { RegionConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";
import { regionStack } from "../../infra/region-stack.ts";

export async function deployExampleCustomer(): Promise<{ outputs: Record<string, unknown>; resources: RecordedResource[] }> {
  return deployCustomer();
}

/** Deploys a customer stack from the example config with some keys replaced (another customer, more scopes). */
export async function deployCustomer(overrides: Record<string, unknown> = {}): Promise<{ outputs: Record<string, unknown>; resources: RecordedResource[] }> {
  clearRecorded();
  const outputs = await resolveAll(customerStack(parseCustomerConfig({ ...exampleConfig("Pulumi.dev.yaml").raw, ...overrides })));
  const resources = await settled();
  setCustomerStackOutputs(outputs);
  clearRecorded();
  return { outputs, resources };
}

export function exampleRegionConfig(file: string, overrides: Record<string, unknown> = {}, secretKeys: string[] = []): RegionConfig {
  const { raw } = exampleConfig(file);
  return parseRegionConfig({ ...raw, ...overrides }, new Set(secretKeys));
}

export async function deployRegion(config: RegionConfig): Promise<{ outputs: Record<string, unknown>; resources: RecordedResource[] }> {
  clearRecorded();
  const outputs = await resolveAll(await regionStack(config));
  const resources = await settled();
  return { outputs, resources };
}
