/**
 * The fleet's storage as the console opens it: the tables and queues the agents made, never
 * created. The deployed console's identity holds data roles only (Storage Table Data Reader, Table
 * Data Contributor on the jobs table, Queue Data Message Sender on the work queues:
 * infra/components/console-app.ts). Create Table needs
 * Microsoft.Storage/storageAccounts/tableServices/tables/write and Create Queue
 * queueServices/queues/write at the account (MicrosoftDocs/azure-docs-rest-apis,
 * docs-ref-conceptual/storageservices/authorize-with-azure-active-directory.md, "Permissions for
 * calling data operations"), which none of those roles grants there, so FleetStorage's
 * create-on-first-use would be refused. A region whose queue does not exist
 * has no agents: submitting to it fails with Azure's QueueNotFound, which the page shows.
 */
import { QueueClient } from "@azure/storage-queue";
import { FleetStorage, type FleetStorageOptions, type StorageConnection } from "../jobs/storage.ts";

export class ExistingFleetStorage extends FleetStorage {
  private readonly connection: StorageConnection;

  constructor(connection: StorageConnection, options: FleetStorageOptions = {}) {
    super(connection, options);
    this.connection = connection;
  }

  /** The agents created them; the console only checks nothing (a missing table fails its page). */
  override async ensureTables(): Promise<void> {}

  override async queue(region: string): Promise<QueueClient> {
    return this.existingQueue(this.queueName(region));
  }

  override async poisonQueue(region: string): Promise<QueueClient> {
    return this.existingQueue(this.poisonQueueName(region));
  }

  private existingQueue(name: string): QueueClient {
    if ("connectionString" in this.connection) return new QueueClient(this.connection.connectionString, name);
    return new QueueClient(`${this.connection.queueEndpoint.replace(/\/+$/, "")}/${name}`, this.connection.credential);
  }
}
