import { describe, expect, test } from "vitest";
import { CronExpression } from "../../runtime/policy/cron.ts";

const utc = (iso: string) => new Date(iso);

describe("CronExpression.matches", () => {
  const cases: [string, string, boolean][] = [
    ["* * * * *", "2026-11-20T13:37:00Z", true],
    ["0 */4 * * *", "2026-11-20T12:00:00Z", true],
    ["0 */4 * * *", "2026-11-20T13:00:00Z", false],
    ["0 */4 * * *", "2026-11-20T12:01:00Z", false],
    ["15,45 9-17 * * *", "2026-11-20T17:45:00Z", true],
    ["15,45 9-17 * * *", "2026-11-20T18:15:00Z", false],
    ["0 9-17/4 * * *", "2026-11-20T13:00:00Z", true], // 9, 13, 17
    ["0 9-17/4 * * *", "2026-11-20T15:00:00Z", false],
    ["30 2 * * 1-5", "2026-11-20T02:30:00Z", true], // a Friday
    ["30 2 * * 1-5", "2026-11-21T02:30:00Z", false], // a Saturday
    ["0 0 * * 7", "2026-11-22T00:00:00Z", true], // 7 is Sunday
    ["0 0 * * 0", "2026-11-22T00:00:00Z", true],
    ["0 0 1 * *", "2026-12-01T00:00:00Z", true],
    // Both day fields restricted: either matches (Vixie cron).
    ["0 0 1 * 5", "2026-11-20T00:00:00Z", true], // Friday, not the 1st
    ["0 0 1 * 5", "2026-11-01T00:00:00Z", true], // the 1st, a Sunday
    ["0 0 1 * 5", "2026-11-21T00:00:00Z", false],
    ["0 0 * 2 *", "2026-02-14T00:00:00Z", true],
    ["0 0 * 2 *", "2026-03-14T00:00:00Z", false],
    ["5/20 * * * *", "2026-11-20T10:45:00Z", true], // 5, 25, 45
    ["5/20 * * * *", "2026-11-20T10:40:00Z", false],
  ];
  test.each(cases)("%s at %s -> %s", (expression, at, expected) => {
    expect(new CronExpression(expression).matches(utc(at))).toBe(expected);
  });
});

describe("CronExpression syntax errors name the field", () => {
  test.each([
    ["* * * *", /five/],
    ["60 * * * *", /minute 60 is outside 0-59/],
    ["* 24 * * *", /hour 24/],
    ["* * 0 * *", /day of month 0/],
    ["* * * 13 *", /month 13/],
    ["* * * * 8", /day of week 8/],
    ["5-1 * * * *", /runs backwards/],
    ["*/0 * * * *", /minute 0 is outside/],
    ["a * * * *", /minute "a" is not a number/],
    ["1,,2 * * * *", /minute/],
  ])("%s", (expression, message) => {
    expect(() => new CronExpression(expression)).toThrow(message);
  });
});

describe("previous and next fire", () => {
  test.each([
    ["0 */4 * * *", "2026-11-20T13:59:59Z", "2026-11-20T12:00:00.000Z"],
    ["0 */4 * * *", "2026-11-20T12:00:00Z", "2026-11-20T12:00:00.000Z"],
    ["30 2 * * 1-5", "2026-11-23T01:00:00Z", "2026-11-20T02:30:00.000Z"], // Monday 01:00 -> Friday
    ["0 0 1 1 *", "2026-11-20T00:00:00Z", "2026-01-01T00:00:00.000Z"],
    ["0 12 29 2 *", "2026-11-20T00:00:00Z", "2024-02-29T12:00:00.000Z"],
    ["59 23 31 * *", "2026-11-20T00:00:00Z", "2026-10-31T23:59:00.000Z"],
  ])("%s before %s is %s", (expression, at, expected) => {
    expect(new CronExpression(expression).previousFire(utc(at))?.toISOString()).toBe(expected);
  });

  test.each([
    ["0 */4 * * *", "2026-11-20T12:00:00Z", "2026-11-20T16:00:00.000Z"],
    ["30 2 * * 1-5", "2026-11-20T03:00:00Z", "2026-11-23T02:30:00.000Z"],
    ["0 0 31 * *", "2026-11-01T00:00:00Z", "2026-12-31T00:00:00.000Z"],
    ["0 12 29 2 *", "2026-11-20T00:00:00Z", "2028-02-29T12:00:00.000Z"],
  ])("%s after %s is %s", (expression, at, expected) => {
    expect(new CronExpression(expression).nextFire(utc(at))?.toISOString()).toBe(expected);
  });

  test("an expression naming an impossible date never fires", () => {
    const never = new CronExpression("0 0 30 2 *");
    expect(never.previousFire(utc("2026-11-20T00:00:00Z"))).toBeUndefined();
    expect(never.nextFire(utc("2026-11-20T00:00:00Z"))).toBeUndefined();
  });

  test("previousFire agrees with a minute-by-minute scan over two days", () => {
    const expression = new CronExpression("7,37 */3 * * 2,4");
    const start = Date.UTC(2026, 10, 16);
    let last: number | undefined;
    for (let t = start; t < start + 2 * 86_400_000; t += 60_000) {
      if (expression.matches(new Date(t))) last = t;
      if (last !== undefined) expect(expression.previousFire(new Date(t + 59_000))?.getTime()).toBe(last);
    }
    expect(last).toBeDefined();
  });
});
