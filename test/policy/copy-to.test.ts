/**
 * A policy's copyTo: the vaults (in other regions) every committed point is copied to. Validated on
 * load like the vault itself, never the policy's own vault, never one twice, at most three.
 */
import { describe, expect, test } from "vitest";
import { MAX_COPY_VAULTS, parsePolicy } from "../../runtime/policy/policy.ts";

const policyWith = (copyTo: string) => `
name: copied
vault: https://primary.blob.core.windows.net/vault
copyTo: ${copyTo}
protect:
  resources: [/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d]
schedule: { every: 1d }
retention: { last: 3 }
`;

describe("copyTo", () => {
  test("lists the copy vaults as written; a policy without it copies nowhere", () => {
    expect(parsePolicy(policyWith("[https://paired.blob.core.windows.net/vault, /srv/copies]"), "p.yaml").copyTo).toEqual([
      "https://paired.blob.core.windows.net/vault",
      "/srv/copies",
    ]);
    expect(parsePolicy(policyWith("[]").replace("copyTo: []\n", ""), "p.yaml").copyTo).toEqual([]);
  });

  test("refuses the policy's own vault, however it is spelled", () => {
    expect(() => parsePolicy(policyWith("[https://PRIMARY.blob.core.windows.net/vault/]"), "p.yaml")).toThrow(/p\.yaml: copyTo\[0\]: .* is the policy's own vault/);
  });

  test("refuses a vault named twice, a query string, a non-URL scheme and more than the limit", () => {
    expect(() => parsePolicy(policyWith("[https://a.blob.core.windows.net/v, https://A.blob.core.windows.net/v]"), "p.yaml")).toThrow(/copyTo\[1\]: .* is named twice/);
    expect(() => parsePolicy(policyWith("[https://a.blob.core.windows.net/v?sig=x]"), "p.yaml")).toThrow(/copyTo\[0\]: must not carry a query string/);
    expect(() => parsePolicy(policyWith("[ftp://a/v]"), "p.yaml")).toThrow(/copyTo\[0\]: .* must be an https:\/\/ container URL/);
    const many = Array.from({ length: MAX_COPY_VAULTS + 1 }, (_, i) => `https://c${i}.blob.core.windows.net/v`).join(", ");
    expect(() => parsePolicy(policyWith(`[${many}]`), "p.yaml")).toThrow(new RegExp(`copyTo: names ${MAX_COPY_VAULTS + 1} vaults; at most ${MAX_COPY_VAULTS}`));
    expect(() => parsePolicy(policyWith("https://a.blob.core.windows.net/v"), "p.yaml")).toThrow(/copyTo: must be a list/);
  });
});
