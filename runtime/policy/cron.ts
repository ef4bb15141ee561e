/**
 * A five-field cron matcher ("m h dom mon dow"), evaluated in UTC: `*`, numbers, ranges `a-b`,
 * lists `a,b`, and steps `*\/s`, `a-b/s`, `a/s`. Day of week is 0-7 (0 and 7 are Sunday). As in
 * Vixie cron, when both day of month and day of week are restricted a day matches if either
 * matches. No names (MON, JAN) and no @-macros: policies stay unambiguous.
 */

const MINUTE = 60_000;

interface FieldSpec {
  name: string;
  min: number;
  max: number;
}

const FIELDS: FieldSpec[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12 },
  { name: "day of week", min: 0, max: 7 },
];

/** Thrown for an expression that cannot be parsed; the message says which field and why. */
export class CronSyntaxError extends Error {}

function parseNumber(text: string, field: FieldSpec, expression: string): number {
  if (!/^\d+$/.test(text)) {
    throw new CronSyntaxError(`cron "${expression}": ${field.name} "${text}" is not a number`);
  }
  const value = Number(text);
  if (value < field.min || value > field.max) {
    throw new CronSyntaxError(
      `cron "${expression}": ${field.name} ${value} is outside ${field.min}-${field.max}`,
    );
  }
  return value;
}

function parseField(text: string, field: FieldSpec, expression: string): { values: Set<number>; star: boolean } {
  const values = new Set<number>();
  let star = false;
  for (const part of text.split(",")) {
    const [rangeText, stepText, extra] = part.split("/");
    if (extra !== undefined || rangeText === "") {
      throw new CronSyntaxError(`cron "${expression}": ${field.name} "${part}" is not a value, range or step`);
    }
    let step = 1;
    if (stepText !== undefined) {
      step = parseNumber(stepText, { ...field, min: 1, max: field.max + 1 }, expression);
    }
    let low: number;
    let high: number;
    if (rangeText === "*") {
      low = field.min;
      high = field.max;
      if (stepText === undefined) star = true;
    } else if (rangeText.includes("-")) {
      const [a, b, more] = rangeText.split("-");
      if (more !== undefined) throw new CronSyntaxError(`cron "${expression}": ${field.name} "${part}" has two dashes`);
      low = parseNumber(a, field, expression);
      high = parseNumber(b, field, expression);
      if (low > high) {
        throw new CronSyntaxError(`cron "${expression}": ${field.name} range ${low}-${high} runs backwards`);
      }
    } else {
      low = parseNumber(rangeText, field, expression);
      // "a/s" means from a to the end of the field, stepping by s.
      high = stepText === undefined ? low : field.max;
    }
    for (let v = low; v <= high; v += step) values.add(v);
  }
  return { values, star };
}

export class CronExpression {
  readonly source: string;
  private readonly minutes: Set<number>;
  private readonly hours: Set<number>;
  private readonly daysOfMonth: Set<number>;
  private readonly months: Set<number>;
  private readonly daysOfWeek: Set<number>;
  private readonly domRestricted: boolean;
  private readonly dowRestricted: boolean;

  constructor(source: string) {
    this.source = source;
    const parts = source.trim().split(/\s+/);
    if (parts.length !== 5) {
      throw new CronSyntaxError(
        `cron "${source}" has ${parts.length} field(s); write five: minute hour day-of-month month day-of-week`,
      );
    }
    const [m, h, dom, mon, dow] = parts.map((p, i) => parseField(p, FIELDS[i], source));
    this.minutes = m.values;
    this.hours = h.values;
    this.daysOfMonth = dom.values;
    this.months = mon.values;
    this.daysOfWeek = new Set([...dow.values].map((d) => (d === 7 ? 0 : d)));
    this.domRestricted = !dom.star;
    this.dowRestricted = !dow.star;
  }

  private dayMatches(time: Date): boolean {
    const domOk = this.daysOfMonth.has(time.getUTCDate());
    const dowOk = this.daysOfWeek.has(time.getUTCDay());
    if (this.domRestricted && this.dowRestricted) return domOk || dowOk;
    return domOk && dowOk;
  }

  matches(time: Date): boolean {
    return (
      this.months.has(time.getUTCMonth() + 1) &&
      this.dayMatches(time) &&
      this.hours.has(time.getUTCHours()) &&
      this.minutes.has(time.getUTCMinutes())
    );
  }

  /**
   * The latest minute at or before `at` that the expression fires on, or undefined if it does not
   * fire within `horizonMs` before `at` (default 8 years, which covers "29 Feb" schedules).
   */
  previousFire(at: Date, horizonMs = 8 * 366 * 86_400_000): Date | undefined {
    const stop = at.getTime() - horizonMs;
    let t = Math.floor(at.getTime() / MINUTE) * MINUTE;
    while (t >= stop) {
      const d = new Date(t);
      const y = d.getUTCFullYear();
      const mo = d.getUTCMonth();
      if (!this.months.has(mo + 1)) {
        t = Date.UTC(y, mo, 1) - MINUTE; // last minute of the previous month
        continue;
      }
      if (!this.dayMatches(d)) {
        t = Date.UTC(y, mo, d.getUTCDate()) - MINUTE;
        continue;
      }
      if (!this.hours.has(d.getUTCHours())) {
        t = Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours()) - MINUTE;
        continue;
      }
      if (!this.minutes.has(d.getUTCMinutes())) {
        t -= MINUTE;
        continue;
      }
      return d;
    }
    return undefined;
  }

  /** The earliest minute strictly after `after` that the expression fires on (same horizon). */
  nextFire(after: Date, horizonMs = 8 * 366 * 86_400_000): Date | undefined {
    const stop = after.getTime() + horizonMs;
    let t = (Math.floor(after.getTime() / MINUTE) + 1) * MINUTE;
    while (t <= stop) {
      const d = new Date(t);
      const y = d.getUTCFullYear();
      const mo = d.getUTCMonth();
      if (!this.months.has(mo + 1)) {
        t = Date.UTC(y, mo + 1, 1);
        continue;
      }
      if (!this.dayMatches(d)) {
        t = Date.UTC(y, mo, d.getUTCDate() + 1);
        continue;
      }
      if (!this.hours.has(d.getUTCHours())) {
        t = Date.UTC(y, mo, d.getUTCDate(), d.getUTCHours() + 1);
        continue;
      }
      if (!this.minutes.has(d.getUTCMinutes())) {
        t += MINUTE;
        continue;
      }
      return d;
    }
    return undefined;
  }
}
