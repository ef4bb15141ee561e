/**
 * Azure's published RBAC operations, as kept in test/data/azure-operations/ (see its README for
 * the sources): the list every custom-role action is checked against.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

const DATA = path.resolve(import.meta.dirname, "../data/azure-operations");

/** Lower-cased actions (Azure compares them case-insensitively), from every provider file. */
export function publishedOperations(): Set<string> {
  const operations = new Set<string>();
  for (const file of readdirSync(DATA).filter((f) => f.endsWith(".txt"))) {
    for (const line of readFileSync(path.join(DATA, file), "utf8").split("\n")) {
      const action = line.replace(/#.*/, "").trim();
      if (action) operations.add(action.toLowerCase());
    }
  }
  return operations;
}

/** The actions not in Azure's published list, named as given. */
export function unpublishedActions(actions: Iterable<string>, published = publishedOperations()): string[] {
  return [...actions].filter((action) => !published.has(action.toLowerCase()));
}
