/**
 * Where Bulwark's agents run: a Log Analytics workspace and a Container Apps environment that
 * ships the jobs' logs to it.
 */
import * as pulumi from "@pulumi/pulumi";
import * as app from "@pulumi/azure-native/app/index.js";
import * as operationalinsights from "@pulumi/azure-native/operationalinsights/index.js";
import { regionalName } from "../naming.ts";

export interface AgentEnvironmentArgs {
  /** With `location`, what the Azure names are made of. */
  customer: string;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  tags: Record<string, string>;
  logRetentionDays?: number;
  /**
   * Private networking (components/network.ts): the subnet, delegated to Microsoft.App/environments,
   * that the environment joins. Absent: Azure's generated network (public egress).
   */
  infrastructureSubnetId?: pulumi.Input<string>;
}

/**
 * A workload-profiles environment on the Consumption profile, joined to a delegated subnet, with
 * no public endpoint (internal: the agents take no inbound traffic). Workload profiles, because a
 * delegated subnet is theirs: a Consumption-only environment needs an undelegated /23
 * (MicrosoftDocs/azure-docs articles/container-apps/custom-virtual-networks.md, "Subnet").
 */
/**
 * The built-in Consumption profile's name, which apps and jobs name to run on it (Azure's own
 * example passes `--workload-profile-name "Consumption"`: MicrosoftDocs/azure-docs
 * articles/container-apps/workload-profiles-manage-cli.md, "Create a container app in a profile").
 */
const CONSUMPTION_PROFILE = "Consumption";

function privateNetworking(infrastructureSubnetId: pulumi.Input<string>) {
  return {
    workloadProfiles: [{ name: CONSUMPTION_PROFILE, workloadProfileType: "Consumption" }],
    vnetConfiguration: { infrastructureSubnetId, internal: true },
  };
}

export class AgentEnvironment extends pulumi.ComponentResource {
  readonly environmentId: pulumi.Output<string>;
  readonly workspaceId: pulumi.Output<string>;
  /** The profile jobs run on: the Consumption profile of a private (workload-profiles) environment; none otherwise. */
  readonly workloadProfileName: string | undefined;

  constructor(name: string, args: AgentEnvironmentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:agent:AgentEnvironment", name, {}, opts);
    const workspace = new operationalinsights.Workspace(
      `${name}-logs`,
      {
        workspaceName: regionalName(args.customer, args.location, "logs"),
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        tags: args.tags,
        sku: { name: "PerGB2018" },
        retentionInDays: args.logRetentionDays ?? 30,
      },
      { parent: this },
    );
    const keys = operationalinsights.getSharedKeysOutput(
      { resourceGroupName: args.resourceGroupName, workspaceName: workspace.name },
      { parent: this },
    );
    const environment = new app.ManagedEnvironment(
      `${name}-env`,
      {
        environmentName: regionalName(args.customer, args.location, "env"),
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        tags: args.tags,
        appLogsConfiguration: {
          destination: "log-analytics",
          logAnalyticsConfiguration: {
            customerId: workspace.customerId,
            sharedKey: pulumi.secret(keys.apply((k) => k.primarySharedKey ?? "")),
          },
        },
        ...(args.infrastructureSubnetId === undefined ? {} : privateNetworking(args.infrastructureSubnetId)),
      },
      { parent: this },
    );
    this.environmentId = environment.id;
    this.workspaceId = workspace.id;
    this.workloadProfileName = args.infrastructureSubnetId === undefined ? undefined : CONSUMPTION_PROFILE;
    this.registerOutputs({ environmentId: this.environmentId });
  }
}
