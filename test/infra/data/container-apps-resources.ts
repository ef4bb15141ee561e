/**
 * What Azure Container Apps runs, as its documentation states it (read 2026-11-30).
 *
 * CPU and memory: MicrosoftDocs/azure-docs articles/container-apps/containers.md (ms.date
 * 5/4/2023), "Configuration", the allocations table: in the Consumption plan the containers'
 * total must be one of these pairs (memory is twice the CPU in Gi, CPU 0.25 to 2 in steps of
 * 0.25); the pairs 2.25/4.5Gi to 4.0/8.0Gi exist only for the Consumption *workload profile* of a
 * workload-profiles environment. Bulwark's environments set no workload profiles (a Consumption
 * plan environment), so the Consumption plan column is the one that applies.
 *
 * Command and args: the same page's settings table: `command` is "the container's startup
 * command", "equivalent to Docker's entrypoint field"; `args` are "start up command arguments".
 * It does not say what `args` alone do; Kubernetes, on which Container Apps runs, does
 * (kubernetes/website content/en/docs/tasks/inject-data-application/define-command-argument-container.md):
 * "If you supply only args for a Container, the default Entrypoint defined in the Docker image is
 * run with the args that you supplied"; a `command` replaces the Entrypoint and ignores the Cmd.
 * We rely on Container Apps following that rule (no Container Apps page contradicts it).
 *
 * The base image: nodejs/docker-node 24/bookworm-slim/Dockerfile (the node:24-slim tag) unpacks
 * Node into /usr/local (so `node` is /usr/local/bin/node, on the default PATH) and creates the
 * `node` user.
 */

export const CONSUMPTION_PLAN_ALLOCATIONS: readonly { cpu: number; memory: string }[] = [
  { cpu: 0.25, memory: "0.5Gi" },
  { cpu: 0.5, memory: "1.0Gi" },
  { cpu: 0.75, memory: "1.5Gi" },
  { cpu: 1.0, memory: "2.0Gi" },
  { cpu: 1.25, memory: "2.5Gi" },
  { cpu: 1.5, memory: "3.0Gi" },
  { cpu: 1.75, memory: "3.5Gi" },
  { cpu: 2.0, memory: "4.0Gi" },
];

/** Gibibytes in a Container Apps memory string ("4Gi", "0.5Gi"). */
export function memoryGi(memory: string): number {
  const match = /^(\d+(?:\.\d+)?)Gi$/.exec(memory);
  if (!match) throw new Error(`not a Container Apps memory size: ${memory}`);
  return Number(match[1]);
}

export function isConsumptionPlanAllocation(cpu: number, memory: string): boolean {
  return CONSUMPTION_PLAN_ALLOCATIONS.some((a) => a.cpu === cpu && memoryGi(a.memory) === memoryGi(memory));
}

/** Where the node:24-slim base image puts executables on PATH that the Dockerfile can rely on. */
export const BASE_IMAGE_EXECUTABLES: Readonly<Record<string, string>> = { node: "/usr/local/bin/node" };
