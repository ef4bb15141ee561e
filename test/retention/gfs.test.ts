import { describe, expect, test } from "vitest";
import { UsageError } from "../../runtime/errors.ts";
import { bucketOf, isoWeek, planRetention, ruleIsEmpty, selectRetained, type RetentionRule } from "../../runtime/retention/gfs.ts";

interface Point {
  id: string;
  time: Date;
}

function at(iso: string): Point {
  return { id: iso, time: new Date(iso) };
}

function kept(points: Point[], rule: RetentionRule): string[] {
  return selectRetained(points, rule).keep.map((p) => p.id);
}

describe("selectRetained", () => {
  const cases: { name: string; points: string[]; rule: RetentionRule; keep: string[] }[] = [
    {
      name: "keeps the N newest for last",
      points: ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z", "2026-11-04T00:00:00Z"],
      rule: { last: 2 },
      keep: ["2026-11-04T00:00:00Z", "2026-11-03T00:00:00Z"],
    },
    {
      name: "keeps the newest point of each day",
      points: ["2026-11-01T01:00:00Z", "2026-11-01T23:00:00Z", "2026-11-02T05:00:00Z", "2026-11-02T06:00:00Z"],
      rule: { daily: 5 },
      keep: ["2026-11-02T06:00:00Z", "2026-11-01T23:00:00Z"],
    },
    {
      name: "counts only days that hold a point (gaps do not use up the count)",
      points: ["2026-11-01T12:00:00Z", "2026-11-05T12:00:00Z", "2026-11-09T12:00:00Z", "2026-11-10T12:00:00Z"],
      rule: { daily: 3 },
      keep: ["2026-11-10T12:00:00Z", "2026-11-09T12:00:00Z", "2026-11-05T12:00:00Z"],
    },
    {
      name: "hourly buckets by UTC hour",
      points: ["2026-11-01T10:05:00Z", "2026-11-01T10:55:00Z", "2026-11-01T11:00:00Z", "2026-11-01T12:30:00Z"],
      rule: { hourly: 2 },
      keep: ["2026-11-01T12:30:00Z", "2026-11-01T11:00:00Z"],
    },
    {
      name: "ISO weeks span the new year (2026-12-31 and 2027-01-01 are both 2026-W53)",
      points: ["2026-12-27T12:00:00Z", "2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z", "2027-01-04T12:00:00Z"],
      rule: { weekly: 3 },
      keep: ["2027-01-04T12:00:00Z", "2027-01-01T12:00:00Z", "2026-12-27T12:00:00Z"],
    },
    {
      name: "monthly and yearly",
      points: ["2024-03-01T00:00:00Z", "2025-06-10T00:00:00Z", "2025-06-20T00:00:00Z", "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"],
      rule: { monthly: 2, yearly: 3 },
      keep: ["2026-01-01T00:00:00Z", "2025-12-31T23:59:59Z", "2024-03-01T00:00:00Z"],
    },
    {
      name: "a point kept by several rules is kept once",
      points: ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"],
      rule: { last: 1, daily: 1, monthly: 1 },
      keep: ["2026-11-02T00:00:00Z"],
    },
    {
      name: "zero counts keep nothing through that rule",
      points: ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"],
      rule: { last: 0, daily: 1 },
      keep: ["2026-11-02T00:00:00Z"],
    },
    {
      name: "a rule with nothing set keeps everything",
      points: ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"],
      rule: {},
      keep: ["2026-11-02T00:00:00Z", "2026-11-01T00:00:00Z"],
    },
    {
      name: "no points",
      points: [],
      rule: { last: 3 },
      keep: [],
    },
  ];

  for (const c of cases) {
    test(c.name, () => {
      const points = c.points.map(at);
      expect(kept(points, c.rule)).toEqual(c.keep);
      const { keep, remove } = selectRetained(points, c.rule);
      // keep and remove partition the input.
      expect(new Set([...keep, ...remove].map((p) => p.id))).toEqual(new Set(c.points));
      expect(keep.length + remove.length).toBe(c.points.length);
    });
  }

  test("the result does not depend on the input order", () => {
    const points = ["2026-11-03T00:00:00Z", "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-02T08:00:00Z"].map(at);
    const shuffled = [points[2], points[0], points[3], points[1]];
    expect(kept(shuffled, { daily: 2 })).toEqual(kept(points, { daily: 2 }));
    expect(kept(shuffled, { daily: 2 })).toEqual(["2026-11-03T00:00:00Z", "2026-11-02T08:00:00Z"]);
  });

  test("reasons name the rule and the bucket", () => {
    const points = ["2026-11-19T10:00:00Z", "2026-11-20T09:00:00Z", "2026-11-20T10:00:00Z"].map(at);
    const { reasons, remove } = selectRetained(points, { last: 1, daily: 2, weekly: 1 });
    expect(reasons.get("2026-11-20T10:00:00Z")).toEqual(["last", "daily 2026-11-20", "weekly 2026-W47"]);
    expect(reasons.get("2026-11-19T10:00:00Z")).toEqual(["daily 2026-11-19"]);
    expect(reasons.has("2026-11-20T09:00:00Z")).toBe(false);
    expect(remove.map((p) => p.id)).toEqual(["2026-11-20T09:00:00Z"]);
  });

  test("refuses counts that are not whole numbers and time zones other than UTC", () => {
    expect(() => selectRetained([], { daily: -1 })).toThrow(/retention.daily/);
    expect(() => selectRetained([], { weekly: 1.5 })).toThrow(/retention.weekly/);
    expect(() => selectRetained([], { last: 1 }, { timeZone: "Europe/Paris" as "UTC" })).toThrow(/UTC/);
  });

  test("a simulated month of 4-hourly points keeps exactly what the policy says", () => {
    // November 2026: the 1st is a Sunday (end of ISO week 44), the 30th a Monday (week 49).
    const points: Point[] = [];
    for (let t = Date.UTC(2026, 10, 1); t < Date.UTC(2026, 11, 1); t += 4 * 3_600_000) {
      points.push({ id: new Date(t).toISOString(), time: new Date(t) });
    }
    expect(points).toHaveLength(180);
    const result = selectRetained(points, { last: 3, daily: 7, weekly: 4, monthly: 2 });
    expect(result.keep.map((p) => p.id)).toEqual([
      "2026-11-30T20:00:00.000Z", // last, daily, weekly W49, monthly 2026-11
      "2026-11-30T16:00:00.000Z", // last
      "2026-11-30T12:00:00.000Z", // last
      "2026-11-29T20:00:00.000Z", // daily, weekly W48
      "2026-11-28T20:00:00.000Z",
      "2026-11-27T20:00:00.000Z",
      "2026-11-26T20:00:00.000Z",
      "2026-11-25T20:00:00.000Z",
      "2026-11-24T20:00:00.000Z", // the 7th day
      "2026-11-22T20:00:00.000Z", // weekly W47
      "2026-11-15T20:00:00.000Z", // weekly W46
    ]);
    expect(result.remove).toHaveLength(180 - 11);
    expect(result.reasons.get("2026-11-30T20:00:00.000Z")).toEqual([
      "last",
      "daily 2026-11-30",
      "weekly 2026-W49",
      "monthly 2026-11",
    ]);
    expect(result.reasons.get("2026-11-15T20:00:00.000Z")).toEqual(["weekly 2026-W46"]);
  });
});

describe("calendar buckets", () => {
  test.each([
    ["2021-01-03T12:00:00Z", 2020, 53],
    ["2024-12-30T00:00:00Z", 2025, 1],
    ["2026-01-01T00:00:00Z", 2026, 1],
    ["2026-11-20T23:59:59Z", 2026, 47],
    ["2026-12-31T00:00:00Z", 2026, 53],
    ["2027-01-03T23:00:00Z", 2026, 53],
    ["2027-01-04T00:00:00Z", 2027, 1],
  ])("ISO week of %s is %i-W%i", (iso, year, week) => {
    expect(isoWeek(new Date(iso))).toEqual({ year, week });
  });

  test("labels", () => {
    const t = new Date("2026-03-07T05:06:07Z");
    expect(bucketOf("hourly", t)).toBe("2026-03-07T05");
    expect(bucketOf("daily", t)).toBe("2026-03-07");
    expect(bucketOf("weekly", t)).toBe("2026-W10");
    expect(bucketOf("monthly", t)).toBe("2026-03");
    expect(bucketOf("yearly", t)).toBe("2026");
  });

  test("planRetention refuses an empty rule", () => {
    expect(() => planRetention([at("2026-11-01T00:00:00Z")], { daily: 0 })).toThrow(UsageError);
    expect(planRetention([at("2026-11-01T00:00:00Z")], { daily: 1 }).keep).toHaveLength(1);
  });

  test("ruleIsEmpty", () => {
    expect(ruleIsEmpty({})).toBe(true);
    expect(ruleIsEmpty({ daily: 0 })).toBe(true);
    expect(ruleIsEmpty({ yearly: 1 })).toBe(false);
  });
});
