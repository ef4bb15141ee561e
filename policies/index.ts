/**
 * Bulwark's policy pack (CrossGuard). `pulumi preview --policy-pack policies` runs it; the rules
 * live in rules.ts so tests can run them without the Pulumi CLI.
 */
import { PolicyPack } from "@pulumi/policy";
import { allPolicies, publishedActionsOnly } from "./rules.ts";
import { publishedOperations } from "./published-operations.ts";

new PolicyPack("bulwark", {
  description: "Bulwark's security rules: private, key-authenticated-never storage, customer-managed keys, immutability, least privilege, regional matching.",
  enforcementLevel: "mandatory",
  policies: [...allPolicies, publishedActionsOnly(publishedOperations())],
});
