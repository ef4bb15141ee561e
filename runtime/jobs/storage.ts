/**
 * The Azure Storage the fleet shares: four tables and two queues per region, in the agent's
 * storage account. Built from a connection string (Azurite, tests) or from endpoint URLs and a
 * TokenCredential (a managed identity in Azure, where shared-key auth is off).
 *
 *   <prefix>jobs     one entity per job: machine, state, data, owner and lease (heartbeat) time
 *   <prefix>items    one entity per protected item: idle/queued/running, last good point
 *   <prefix>locks    leases on item locks and region slots (see leases.ts)
 *   <prefix>reports  one report per finished job
 *   <prefix>-work-<region>, <prefix>-poison-<region>   the region's work and poison queues
 */
import type { TokenCredential } from "@azure/identity";
import { TableClient, TableServiceClient } from "@azure/data-tables";
import { QueueClient, QueueServiceClient } from "@azure/storage-queue";
import { UsageError } from "../errors.ts";
import { normalizeRegion } from "../policy/items.ts";

export type StorageConnection =
  | { connectionString: string }
  | { tableEndpoint: string; queueEndpoint: string; credential: TokenCredential };

export interface FleetStorageOptions {
  /** Lowercase letters and digits, 3-20; names every table and queue. Default "bulwark". */
  prefix?: string;
}

function isInsecure(connection: StorageConnection): boolean {
  if ("connectionString" in connection) return /TableEndpoint=http:\/\//i.test(connection.connectionString);
  return connection.tableEndpoint.startsWith("http://");
}

export class FleetStorage {
  readonly prefix: string;
  readonly jobs: TableClient;
  readonly items: TableClient;
  readonly locks: TableClient;
  readonly reports: TableClient;
  private readonly tableService: TableServiceClient;
  private readonly queueService: QueueServiceClient;
  private readonly created = new Set<string>();

  constructor(connection: StorageConnection, options: FleetStorageOptions = {}) {
    const prefix = options.prefix ?? "bulwark";
    if (!/^[a-z][a-z0-9]{2,19}$/.test(prefix)) {
      throw new UsageError(`storage prefix "${prefix}" must be 3-20 lowercase letters and digits, starting with a letter`);
    }
    this.prefix = prefix;
    const allowInsecureConnection = isInsecure(connection);
    const table = (name: string) =>
      "connectionString" in connection
        ? TableClient.fromConnectionString(connection.connectionString, name, { allowInsecureConnection })
        : new TableClient(connection.tableEndpoint, name, connection.credential, { allowInsecureConnection });
    this.jobs = table(`${prefix}jobs`);
    this.items = table(`${prefix}items`);
    this.locks = table(`${prefix}locks`);
    this.reports = table(`${prefix}reports`);
    if ("connectionString" in connection) {
      this.tableService = TableServiceClient.fromConnectionString(connection.connectionString, { allowInsecureConnection });
      this.queueService = QueueServiceClient.fromConnectionString(connection.connectionString);
    } else {
      this.tableService = new TableServiceClient(connection.tableEndpoint, connection.credential, { allowInsecureConnection });
      this.queueService = new QueueServiceClient(connection.queueEndpoint, connection.credential);
    }
  }

  /** Creates the tables (idempotent). Queues are created on first use by queue()/poisonQueue(). */
  async ensureTables(): Promise<void> {
    for (const client of [this.jobs, this.items, this.locks, this.reports]) {
      if (this.created.has(client.tableName)) continue;
      await this.tableService.createTable(client.tableName); // succeeds if it exists
      this.created.add(client.tableName);
    }
  }

  queueName(region: string): string {
    return `${this.prefix}-work-${normalizeRegion(region)}`;
  }

  poisonQueueName(region: string): string {
    return `${this.prefix}-poison-${normalizeRegion(region)}`;
  }

  private async queueClient(name: string): Promise<QueueClient> {
    if (!/^[a-z0-9](?:[a-z0-9]|-(?!-)){2,62}$/.test(name)) {
      throw new UsageError(`queue name "${name}" is not a valid Azure queue name; check the region name`);
    }
    const client = this.queueService.getQueueClient(name);
    if (!this.created.has(name)) {
      await client.createIfNotExists();
      this.created.add(name);
    }
    return client;
  }

  /** The region's work queue (created if missing). */
  queue(region: string): Promise<QueueClient> {
    return this.queueClient(this.queueName(region));
  }

  /** The region's poison queue (created if missing). */
  poisonQueue(region: string): Promise<QueueClient> {
    return this.queueClient(this.poisonQueueName(region));
  }
}

/** Table keys cannot hold / \ # ? or control characters: ARM ids are stored base64url-encoded. */
export function encodeKey(value: string): string {
  return Buffer.from(value, "utf8").toString("base64url");
}

export function decodeKey(key: string): string {
  return Buffer.from(key, "base64url").toString("utf8");
}

export function statusCodeOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** True for an If-Match failure (412) or a create that found the entity there (409). */
export function isConflict(error: unknown): boolean {
  const status = statusCodeOf(error);
  return status === 412 || status === 409;
}

export function isNotFound(error: unknown): boolean {
  return statusCodeOf(error) === 404;
}
