import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Azurite } from "./azurite.ts";

let azurite: Azurite;
beforeAll(async () => {
  azurite = await Azurite.start();
});
afterAll(async () => {
  await azurite?.stop();
});

test("Azurite keeps blobs across a halt and resume on the same ports", async () => {
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  const container = service.getContainerClient("probe");
  await container.create();
  await container.getBlockBlobClient("a").upload("hello", 5);
  await azurite.halt();
  await azurite.resume();
  const body = await container.getBlockBlobClient("a").downloadToBuffer();
  expect(body.toString()).toBe("hello");
});
