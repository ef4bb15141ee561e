/**
 * Azure's published RBAC operations, as the repository keeps them in test/data/azure-operations/
 * (transcribed from MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/*.md;
 * that folder's README names each file's source and date). The pack checks every custom-role
 * action against this list, as the runtime's tests do: one list, one source.
 */
import { readFileSync, readdirSync } from "node:fs";

const DATA = new URL("../test/data/azure-operations/", import.meta.url);

/** Lower-cased actions (Azure compares them case-insensitively), from every provider file. */
export function publishedOperations(): Set<string> {
  const operations = new Set<string>();
  for (const file of readdirSync(DATA).filter((f) => f.endsWith(".txt"))) {
    for (const line of readFileSync(new URL(file, DATA), "utf8").split("\n")) {
      const action = line.replace(/#.*/, "").trim();
      if (action) operations.add(action.toLowerCase());
    }
  }
  return operations;
}
