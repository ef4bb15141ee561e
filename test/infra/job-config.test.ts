/**
 * Config for the Container Apps jobs, checked against what Azure runs: the worker's CPU/memory
 * pair (the Consumption plan's allocations, data/container-apps-resources.ts), customer names that
 * make valid job names, and the registry an Azure Container Registry image is pulled from (its
 * resource id, the scope of the jobs' AcrPull: registry-pull.test.ts).
 */
import { describe, expect, it } from "vitest";
import { exampleConfig } from "./harness.ts";
import { parseStackConfig } from "../../infra/config.ts";
import { UsageError } from "../../runtime/errors.ts";
import { CONSUMPTION_PLAN_ALLOCATIONS, isConsumptionPlanAllocation } from "./data/container-apps-resources.ts";

const REGISTRY_ID = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/bulwark-shared/providers/Microsoft.ContainerRegistry/registries/bulwarkregistry";

const customer = () => exampleConfig("Pulumi.dev.yaml").raw;
const region = () => exampleConfig("Pulumi.dev-westeurope.yaml").raw;

function failure(raw: Record<string, unknown>): string {
  try {
    parseStackConfig(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as UsageError).message;
  }
  throw new Error("config was accepted");
}

describe("worker CPU and memory", () => {
  it("accepts exactly the Consumption plan's CPU/memory pairs", () => {
    for (let quarters = 1; quarters <= 16; quarters++) {
      for (let halves = 1; halves <= 16; halves++) {
        const cpu = quarters / 4;
        const memory = `${halves / 2}Gi`;
        const raw = { ...region(), worker: { cpu, memory } };
        const accepted = isConsumptionPlanAllocation(cpu, memory);
        if (accepted) expect(parseStackConfig(raw), `${cpu} CPU, ${memory}`).toMatchObject({ worker: { cpu, memory } });
        else expect(failure(raw), `${cpu} CPU, ${memory}`).toMatch(/^bulwark:worker\.cpu and worker\.memory/);
      }
    }
    expect(CONSUMPTION_PLAN_ALLOCATIONS.length).toBe(8);
  });

  it("refuses a pair Container Apps does not run with one message that names both keys and lists the allowed pairs", () => {
    expect(failure({ ...region(), worker: { cpu: 2, memory: "2Gi" } })).toBe(
      "bulwark:worker.cpu and worker.memory (2 CPU, 2Gi) are not a pair Container Apps runs. Use one of 0.25/0.5Gi, 0.5/1Gi, 0.75/1.5Gi, 1/2Gi, 1.25/2.5Gi, 1.5/3Gi, 1.75/3.5Gi, 2/4Gi: memory is twice the CPU, from 0.25 to 2 CPU in steps of 0.25 (the Consumption plan's allocations).",
    );
    expect(failure({ ...region(), worker: { cpu: 4, memory: "8Gi" } })).toMatch(/^bulwark:worker\.cpu and worker\.memory \(4 CPU, 8Gi\) are not a pair/);
    expect(failure({ ...region(), worker: { cpu: 1.1, memory: "2.2Gi" } })).toMatch(/^bulwark:worker\.cpu and worker\.memory \(1\.1 CPU, 2\.2Gi\) are not a pair/);
  });
});

describe("customer names", () => {
  it("refuses two hyphens in a row, which no Container Apps name may hold", () => {
    expect(failure({ ...customer(), customer: "contoso--eu" })).toMatch(/^bulwark:customer "contoso--eu" is not a valid customer name\. Use 3 to 20 lowercase letters, digits or single hyphens/);
    expect(parseStackConfig({ ...customer(), customer: "contoso-eu-2" })).toMatchObject({ customer: "contoso-eu-2" });
  });
});

describe("registry config", () => {
  it("takes the registry's resource id for an image in an Azure Container Registry", () => {
    expect(parseStackConfig({ ...customer(), registryId: REGISTRY_ID })).toMatchObject({ registry: { server: "bulwarkregistry.azurecr.io", resourceId: REGISTRY_ID } });
    expect(parseStackConfig({ ...region(), registryId: REGISTRY_ID })).toMatchObject({ registry: { server: "bulwarkregistry.azurecr.io", resourceId: REGISTRY_ID } });
  });

  it("needs nothing for a public image", () => {
    const raw: Record<string, unknown> = { ...region(), image: "ghcr.io/example/bulwark:0.1.0" };
    delete raw.registryId;
    expect(parseStackConfig(raw)).not.toHaveProperty("registry", expect.anything());
  });

  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["an Azure Container Registry image without the registry's id", { registryId: undefined }, /^bulwark:registryId is not set, but bulwark:image is in the Azure Container Registry bulwarkregistry\.azurecr\.io\. Set it to that registry's resource id \(.*`az acr show -n bulwarkregistry --query id`/],
    ["a registry id that is no registry", { registryId: "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/bulwarkregistry" }, /^bulwark:registryId ".*storageAccounts\/bulwarkregistry" is not the resource id of an Azure Container Registry\. Write \/subscriptions\/<guid>\/resourceGroups\/<group>\/providers\/Microsoft\.ContainerRegistry\/registries\/bulwarkregistry/],
    ["another registry than the image's", { registryId: REGISTRY_ID.replace(/bulwarkregistry$/, "otherregistry") }, /^bulwark:registryId names the registry otherregistry, but bulwark:image is pulled from bulwarkregistry\.azurecr\.io\. Use the id of the registry whose login server is bulwarkregistry\.azurecr\.io\./],
    ["a registry id beside a public image", { registryId: REGISTRY_ID, image: "ghcr.io/example/bulwark:0.1.0" }, /^bulwark:registryId is set, but bulwark:image \(ghcr\.io\/example\/bulwark:0\.1\.0\) is not in an Azure Container Registry/],
  ];
  for (const [what, overrides, message] of cases) {
    it(`rejects ${what}, naming the key and the fix`, () => {
      for (const raw of [customer(), region()]) expect(failure({ ...raw, ...overrides })).toMatch(message);
    });
  }
});
