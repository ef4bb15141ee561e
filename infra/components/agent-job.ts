/**
 * One Container Apps job running the Bulwark image under a user-assigned identity. Plain settings
 * go in as environment values; anything secret goes in as a job secret referenced by name, so no
 * credential is ever a plain-text environment value.
 */
import * as pulumi from "@pulumi/pulumi";
import * as app from "@pulumi/azure-native/app/index.js";
import { regionalName } from "../naming.ts";
import type { ContainerRegistry } from "../config.ts";
import { builtInRoleId, grantRole, subscriptionOf } from "./roles.ts";

export interface JobSecret {
  /** The environment variable that receives it. */
  env: string;
  value: pulumi.Input<string>;
}

export type JobTrigger =
  | { kind: "schedule"; cron: string }
  | {
      kind: "queue";
      accountName: pulumi.Input<string>;
      queueName: pulumi.Input<string>;
      maxExecutions: number;
      /** Messages per execution before KEDA starts another one. */
      queueLength: number;
    };

export interface AgentJobArgs {
  /** With `location` and the role, what the job's Azure name is made of. */
  customer: string;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  environmentId: pulumi.Input<string>;
  /** The environment's workload profile the job runs on; only in a workload-profiles environment. */
  workloadProfileName?: string;
  image: string;
  /** `bulwark agent <role>` */
  agentCommand: "bridge" | "schedule" | "worker" | "prune";
  identityId: pulumi.Input<string>;
  identityClientId: pulumi.Input<string>;
  /** Further user-assigned identities the job holds (the worker's restore identity); AZURE_CLIENT_ID stays the first. */
  additionalIdentityIds?: pulumi.Input<string>[];
  env: Record<string, pulumi.Input<string>>;
  secrets?: JobSecret[];
  trigger: JobTrigger;
  replicaTimeoutSeconds: number;
  replicaRetryLimit: number;
  cpu: number;
  memory: string;
  tags: Record<string, string>;
  /** Roles the job needs before its first execution. */
  dependsOn?: pulumi.Resource[];
  /** The image's Azure Container Registry, pulled from as the job's identity (see grantRegistryPull); absent for a public image. */
  registry?: ContainerRegistry;
}

/**
 * AcrPull: Microsoft.ContainerRegistry/registries/pull/read and nothing else (MicrosoftDocs/azure-docs
 * articles/role-based-access-control/built-in-roles/containers.md, "AcrPull").
 */
export const ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d";

/**
 * AcrPull for one job identity at the image's registry, which a job needs to pull as that identity
 * ("The managed identity must have AcrPull access", MicrosoftDocs/azure-docs
 * articles/container-apps/containers.md, "Managed identity with Azure Container Registry"). Once per
 * identity, however many jobs share it; nothing for a public image.
 */
export function grantRegistryPull(name: string, registry: ContainerRegistry | undefined, principalId: pulumi.Input<string>, parent: pulumi.Resource): ReturnType<typeof grantRole>[] {
  if (registry === undefined) return [];
  const roleDefinitionId = builtInRoleId(subscriptionOf(registry.resourceId), ACR_PULL_ROLE);
  return [grantRole(`${name}-acr-pull`, { principalId, roleDefinitionId, scope: registry.resourceId, description: `Bulwark: pull the agents' image from ${registry.server}` }, parent)];
}

/** The role in a job's name: at most 6 characters, so the name fits Container Apps' 32 (infra/naming.ts). */
const JOB_ROLE_NAMES: Record<AgentJobArgs["agentCommand"], string> = { bridge: "bridge", schedule: "sched", worker: "worker", prune: "prune" };

export function secretName(env: string): string {
  return env.toLowerCase().replace(/_/g, "-");
}

export function agentJob(name: string, args: AgentJobArgs, parent: pulumi.Resource): app.Job {
  const secrets = args.secrets ?? [];
  const env = [
    ...Object.entries(args.env).map(([envName, value]) => ({ name: envName, value })),
    { name: "AZURE_CLIENT_ID", value: args.identityClientId },
    ...secrets.map((s) => ({ name: s.env, secretRef: secretName(s.env) })),
  ];
  const trigger = args.trigger;
  return new app.Job(
    name,
    {
      jobName: regionalName(args.customer, args.location, JOB_ROLE_NAMES[args.agentCommand]),
      resourceGroupName: args.resourceGroupName,
      location: args.location,
      environmentId: args.environmentId,
      workloadProfileName: args.workloadProfileName,
      tags: args.tags,
      identity: { type: "UserAssigned", userAssignedIdentities: [args.identityId, ...(args.additionalIdentityIds ?? [])] },
      configuration: {
        triggerType: trigger.kind === "schedule" ? "Schedule" : "Event",
        replicaTimeout: args.replicaTimeoutSeconds,
        replicaRetryLimit: args.replicaRetryLimit,
        // The job pulls as its own identity: no registry password anywhere.
        registries: args.registry === undefined ? [] : [{ server: args.registry.server, identity: args.identityId }],
        secrets: secrets.map((s) => ({ name: secretName(s.env), value: pulumi.secret(s.value) })),
        scheduleTriggerConfig:
          trigger.kind === "schedule" ? { cronExpression: trigger.cron, parallelism: 1, replicaCompletionCount: 1 } : undefined,
        eventTriggerConfig:
          trigger.kind === "queue"
            ? {
                parallelism: 1,
                replicaCompletionCount: 1,
                scale: {
                  minExecutions: 0,
                  maxExecutions: trigger.maxExecutions,
                  pollingInterval: 30,
                  rules: [
                    {
                      name: "queue",
                      type: "azure-queue",
                      metadata: { accountName: trigger.accountName, queueName: trigger.queueName, queueLength: String(trigger.queueLength) },
                      // KEDA reads the queue as the job's own identity: no connection string.
                      identity: args.identityId,
                    },
                  ],
                },
              }
            : undefined,
      },
      template: {
        containers: [
          {
            name: args.agentCommand,
            image: args.image,
            // No `command`: that would replace the image's ENTRYPOINT (`node /app/runtime/cli/main.ts`,
            // see Dockerfile), and nothing named bulwark is on the image's PATH. `args` alone replace
            // its CMD (Container Apps: MicrosoftDocs/azure-docs articles/container-apps/containers.md,
            // "command ... equivalent to Docker's entrypoint"; the args-only rule is Kubernetes', see
            // test/infra/data/container-apps-resources.ts). test/infra/image-jobs.test.ts runs the check.
            args: ["agent", args.agentCommand],
            env,
            resources: { cpu: args.cpu, memory: args.memory },
          },
        ],
      },
    },
    { parent, dependsOn: args.dependsOn },
  );
}
