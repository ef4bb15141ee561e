/**
 * The region's policy document on its own: what it protects, and the tripwire that refuses to
 * deploy a document the runtime's validator would refuse at every scheduler tick.
 */
import { describe, expect, it } from "vitest";
import { policyJson, regionPolicyDocument, requireResourcesInScopes } from "../../infra/backup-policy.ts";
import { validatePolicy } from "../../runtime/policy/policy.ts";
import { UsageError } from "../../runtime/errors.ts";

const base = {
  customer: "contoso",
  region: "westeurope",
  vaultUrl: "https://bwvcontoso123456.blob.core.windows.net/vault",
  protectedScopes: ["/subscriptions/AAAA/resourceGroups/a", "/subscriptions/aaaa/resourceGroups/b", "/subscriptions/bbbb"],
  policy: { every: "4h", tag: "bulwark-protect=true", resources: [] },
  retention: { last: 6, daily: 35 },
};

describe("the region's policy document", () => {
  it("selects each protectable type by tag once per subscription of the region's scopes", () => {
    const policy = validatePolicy(regionPolicyDocument(base), "t");
    expect(policy.protect.tagged).toHaveLength(3);
    for (const selector of policy.protect.tagged) expect(selector.subscriptions).toEqual(["aaaa", "bbbb"]);
    expect(policy.protect.resources).toEqual([]);
  });

  it("is refused before deployment when the runtime would refuse it", () => {
    expect(() => policyJson([regionPolicyDocument({ ...base, vaultUrl: `${base.vaultUrl}?sig=abc` })])).toThrow(/BULWARK_POLICY_JSON\[0\]: vault: must not carry a query string/);
    expect(() => policyJson([regionPolicyDocument({ ...base, policy: { ...base.policy, every: "4x" } })])).toThrow(UsageError);
    expect(JSON.parse(policyJson([regionPolicyDocument(base)]))).toHaveLength(1);
  });

  it("accepts explicit resources only inside the protected scopes (case-insensitively, not by name prefix)", () => {
    const inside = "/subscriptions/aaaa/resourceGroups/A/providers/Microsoft.Compute/disks/d1";
    const lookalike = "/subscriptions/aaaa/resourceGroups/ab/providers/Microsoft.Compute/disks/d1";
    expect(() => requireResourcesInScopes([inside, "/subscriptions/bbbb/resourceGroups/any/providers/Microsoft.Compute/disks/d2"], base.protectedScopes, "westeurope")).not.toThrow();
    expect(() => requireResourcesInScopes([inside, lookalike], base.protectedScopes, "westeurope")).toThrow(/^bulwark:protectResources\[1\] .*\/resourceGroups\/ab\/.* is outside westeurope's protected scopes/);
  });
});
