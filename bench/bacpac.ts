/**
 * Deterministic BACPAC-like exports for the dedup benchmark: a zip (deflate, as DacFx writes it)
 * holding model.xml, DacMetadata.xml, Origin.xml, [Content_Types].xml and one data file per table,
 * 20 tables of generated rows in primary-key order, encoded like BCP native files (little-endian
 * fixed-width numbers, 8-byte date-times, 16-byte GUIDs, nvarchar as a 2-byte byte length and
 * UTF-16LE). Export 2 is export 1 after a day of work: ~1% of the rows of some tables updated
 * (scattered, or the newest rows), rows appended to one table, a new Origin.xml.
 * Everything derives from the seed; the zip is built with the emulator's writer (test/emulator/arm/bacpac.ts).
 */
import { writeZip } from "../test/emulator/arm/bacpac.ts";
import { SmallRng } from "./image.ts";

type ColumnType = "id" | "fk" | "int" | "money" | "datetime" | "bit" | "guid" | "name" | "email" | "city" | "country" | "enum" | "words";

interface Column {
  name: string;
  type: ColumnType;
  /** Changed when a row is updated. */
  mutable?: boolean;
  /** fk / int range, or the most words. */
  max?: number;
  values?: string[];
}

interface TableSpec {
  name: string;
  rows: number;
  columns: Column[];
}

/** What export 2 does to a table. */
export interface TableChange {
  table: string;
  kind: "update-scattered" | "update-newest" | "append";
  /** Fraction of export 1's rows updated, or appended. */
  fraction: number;
}

const STATUS = ["New", "Open", "Pending", "Active", "OnHold", "Shipped", "Closed", "Cancelled"];
const FIRST = "Anna Ben Carla David Emma Finn Greta Hugo Ida Jonas Klara Lars Mia Noah Olga Paul Rosa Sven Tara Udo Vera Wim Xenia Yusuf Zoe Ali Bea Cem Dora Emil Fay Gil".split(" ");
const LAST = "Jansen Muller Schmidt Dubois Rossi Novak Berg Lund Visser Smit Bakker Meyer Weber Fischer Laurent Moreau Costa Silva Nowak Horvat Kovac Olsen Holm Nilsson Eriksson Larsen Kramer Vogel Roth Peeters".split(" ");
const CITIES = "Amsterdam Berlin Paris Madrid Rome Vienna Prague Warsaw Oslo Stockholm Helsinki Copenhagen Dublin Lisbon Brussels Zurich Munich Hamburg Lyon Milan Porto Krakow Gothenburg Utrecht Rotterdam Antwerp Seville Turin Leipzig Bergen".split(" ");
const COUNTRIES = ["NL", "DE", "FR", "ES", "IT", "AT", "CZ", "PL", "NO", "SE", "FI", "DK", "IE", "PT", "BE", "CH"];
const DOMAINS = ["example.com", "mail.example", "contoso.com", "fabrikam.net", "northwind.org"];

/** 1024 pseudo-words from syllables, drawn with a skew toward the first ones (like word frequencies). */
const WORDS = (() => {
  const rng = new SmallRng("bacpac-vocabulary", "v1");
  const syllables = "ka lo mi ne ra to su vi de an el in or us ta re ma no li be".split(" ");
  const words: string[] = [];
  for (let i = 0; i < 1024; i++) {
    let word = "";
    for (let s = rng.int(1, 4); s > 0; s--) word += syllables[rng.int(0, syllables.length - 1)];
    words.push(word);
  }
  return words;
})();

const BASE_TIME = Date.UTC(2024, 0, 1);
export const EXPORT_TIMES = [Date.UTC(2026, 0, 14, 2, 0, 0), Date.UTC(2026, 0, 15, 2, 0, 0)];

const c = (name: string, type: ColumnType, extra: Partial<Column> = {}): Column => ({ name, type, ...extra });

/** The schema: 20 tables, tens of MiB of rows in total. */
export const TABLES: TableSpec[] = [
  { name: "Customers", rows: 40_000, columns: [c("Id", "id"), c("Name", "name"), c("Email", "email"), c("City", "city"), c("Country", "country"), c("CreatedAt", "datetime"), c("Status", "enum", { values: STATUS, mutable: true }), c("Balance", "money", { mutable: true }), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "Addresses", rows: 50_000, columns: [c("Id", "id"), c("CustomerId", "fk", { max: 40_000 }), c("Street", "words", { max: 3 }), c("City", "city"), c("Country", "country"), c("IsPrimary", "bit")] },
  { name: "Categories", rows: 300, columns: [c("Id", "id"), c("Name", "words", { max: 2 }), c("ParentId", "fk", { max: 300 })] },
  { name: "Suppliers", rows: 2_000, columns: [c("Id", "id"), c("Name", "words", { max: 3 }), c("Contact", "name"), c("Email", "email"), c("Country", "country")] },
  { name: "Products", rows: 20_000, columns: [c("Id", "id"), c("Sku", "guid"), c("Name", "words", { max: 4 }), c("CategoryId", "fk", { max: 300 }), c("SupplierId", "fk", { max: 2_000 }), c("Price", "money", { mutable: true }), c("Description", "words", { max: 30 }), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "Warehouses", rows: 40, columns: [c("Id", "id"), c("Name", "words", { max: 2 }), c("City", "city")] },
  { name: "Inventory", rows: 80_000, columns: [c("Id", "id"), c("ProductId", "fk", { max: 20_000 }), c("WarehouseId", "fk", { max: 40 }), c("Quantity", "int", { max: 5_000, mutable: true }), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "Orders", rows: 120_000, columns: [c("Id", "id"), c("CustomerId", "fk", { max: 40_000 }), c("PlacedAt", "datetime"), c("Status", "enum", { values: STATUS, mutable: true }), c("Total", "money"), c("Currency", "enum", { values: ["EUR", "EUR", "EUR", "SEK", "DKK", "PLN", "CHF"] }), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "OrderLines", rows: 240_000, columns: [c("Id", "id"), c("OrderId", "fk", { max: 120_000 }), c("ProductId", "fk", { max: 20_000 }), c("Quantity", "int", { max: 20 }), c("UnitPrice", "money")] },
  { name: "Invoices", rows: 110_000, columns: [c("Id", "id"), c("OrderId", "fk", { max: 120_000 }), c("Number", "guid"), c("IssuedAt", "datetime"), c("Amount", "money"), c("Paid", "bit", { mutable: true })] },
  { name: "Payments", rows: 100_000, columns: [c("Id", "id"), c("InvoiceId", "fk", { max: 110_000 }), c("PaidAt", "datetime"), c("Amount", "money"), c("Method", "enum", { values: ["Card", "Card", "Transfer", "iDEAL", "Klarna", "PayPal"] }), c("Reference", "guid")] },
  { name: "Shipments", rows: 100_000, columns: [c("Id", "id"), c("OrderId", "fk", { max: 120_000 }), c("Carrier", "enum", { values: ["PostNL", "DHL", "DPD", "UPS", "GLS"] }), c("Tracking", "guid"), c("Status", "enum", { values: STATUS, mutable: true }), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "Departments", rows: 25, columns: [c("Id", "id"), c("Name", "words", { max: 2 })] },
  { name: "Employees", rows: 1_500, columns: [c("Id", "id"), c("Name", "name"), c("Email", "email"), c("DepartmentId", "fk", { max: 25 }), c("HiredAt", "datetime")] },
  { name: "Tickets", rows: 30_000, columns: [c("Id", "id"), c("CustomerId", "fk", { max: 40_000 }), c("Subject", "words", { max: 8 }), c("Status", "enum", { values: STATUS, mutable: true }), c("AssigneeId", "fk", { max: 1_500, mutable: true }), c("OpenedAt", "datetime"), c("ModifiedAt", "datetime", { mutable: true })] },
  { name: "TicketComments", rows: 40_000, columns: [c("Id", "id"), c("TicketId", "fk", { max: 30_000 }), c("AuthorId", "fk", { max: 1_500 }), c("Body", "words", { max: 24 }), c("PostedAt", "datetime")] },
  { name: "Reviews", rows: 25_000, columns: [c("Id", "id"), c("ProductId", "fk", { max: 20_000 }), c("CustomerId", "fk", { max: 40_000 }), c("Stars", "int", { max: 5 }), c("Text", "words", { max: 25 }), c("PostedAt", "datetime")] },
  { name: "PriceHistory", rows: 100_000, columns: [c("Id", "id"), c("ProductId", "fk", { max: 20_000 }), c("Price", "money"), c("ValidFrom", "datetime")] },
  { name: "Sessions", rows: 60_000, columns: [c("Id", "id"), c("SessionKey", "guid"), c("CustomerId", "fk", { max: 40_000 }), c("StartedAt", "datetime"), c("UserAgent", "enum", { values: ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)", "Mozilla/5.0 (X11; Linux x86_64)"] })] },
  { name: "AuditLog", rows: 80_000, columns: [c("Id", "id"), c("At", "datetime"), c("ActorId", "fk", { max: 1_500 }), c("Action", "enum", { values: ["Insert", "Update", "Delete", "Login", "Export"] }), c("Entity", "enum", { values: ["Order", "Customer", "Product", "Ticket", "Invoice"] }), c("Details", "words", { max: 12 })] },
];

/** Export 2: a day of work on export 1. */
export const CHANGES: TableChange[] = [
  { table: "Customers", kind: "update-scattered", fraction: 0.01 },
  { table: "Inventory", kind: "update-scattered", fraction: 0.01 },
  { table: "Tickets", kind: "update-scattered", fraction: 0.01 },
  { table: "Orders", kind: "update-newest", fraction: 0.01 },
  { table: "AuditLog", kind: "append", fraction: 0.02 },
];

/** A growable byte buffer for one table's data file. */
class Writer {
  buffer = Buffer.alloc(1 << 20);
  length = 0;

  ensure(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const next = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  int32(value: number): void {
    this.ensure(4);
    this.length = this.buffer.writeInt32LE(value | 0, this.length);
  }

  int64(value: number): void {
    this.ensure(8);
    this.length = this.buffer.writeBigInt64LE(BigInt(Math.round(value)), this.length);
  }

  byte(value: number): void {
    this.ensure(1);
    this.buffer[this.length++] = value;
  }

  bytes(rng: SmallRng, count: number): void {
    this.ensure(count);
    for (let i = 0; i < count; i += 4) {
      const word = rng.nextU32();
      for (let j = 0; j < 4 && i + j < count; j++) this.buffer[this.length++] = (word >>> (8 * j)) & 0xff;
    }
  }

  /** nvarchar: 2-byte length in bytes, then UTF-16LE. */
  nvarchar(text: string): void {
    const bytes = Buffer.byteLength(text, "utf16le");
    this.ensure(2 + bytes);
    this.length = this.buffer.writeUInt16LE(bytes, this.length);
    this.length += this.buffer.write(text, this.length, "utf16le");
  }

  done(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

function pick<T>(rng: SmallRng, values: T[]): T {
  return values[rng.int(0, values.length - 1)];
}

function words(rng: SmallRng, most: number): string {
  const count = rng.int(1, most);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const u = rng.next();
    out.push(WORDS[Math.floor(u * u * u * WORDS.length)]);
  }
  return out.join(" ");
}

/** One column value of row `row` (0-based) of a table with `rows` rows in export 1. */
function writeValue(out: Writer, column: Column, row: number, rows: number, rng: SmallRng, now: number | undefined): void {
  switch (column.type) {
    case "id":
      return out.int32(row + 1);
    case "fk":
    case "int":
      return out.int32(rng.int(column.type === "fk" ? 1 : 0, column.max ?? 1000));
    case "money":
      return out.int64(rng.int(100, 5_000_000) * 100);
    case "datetime": {
      // Rows in key order are roughly in time order; an update stamps the export's day.
      const span = EXPORT_TIMES[0] - BASE_TIME;
      const at = now ?? BASE_TIME + Math.floor((span * row) / rows) + rng.int(0, 3_600_000);
      return out.int64(at * 10_000);
    }
    case "bit":
      return out.byte(rng.int(0, 1));
    case "guid":
      return out.bytes(rng, 16);
    case "name":
      return out.nvarchar(`${pick(rng, FIRST)} ${pick(rng, LAST)}`);
    case "email":
      return out.nvarchar(`${pick(rng, FIRST).toLowerCase()}.${pick(rng, LAST).toLowerCase()}${rng.int(1, 999)}@${pick(rng, DOMAINS)}`);
    case "city":
      return out.nvarchar(pick(rng, CITIES));
    case "country":
      return out.nvarchar(pick(rng, COUNTRIES));
    case "enum":
      return out.nvarchar(pick(rng, column.values!));
    case "words":
      return out.nvarchar(words(rng, column.max ?? 5));
  }
}

/** The rows of export `version` (1 or 2) that differ from export 1: updated row indexes and the row count. */
export function planTable(table: TableSpec, version: number, seed: string): { updated: Set<number>; rowCount: number } {
  const updated = new Set<number>();
  let rowCount = table.rows;
  if (version === 1) return { updated, rowCount };
  for (const change of CHANGES.filter((ch) => ch.table === table.name)) {
    const count = Math.round(table.rows * change.fraction);
    if (change.kind === "append") rowCount += count;
    else if (change.kind === "update-newest") {
      // The newest 2% of rows, half of them touched (recent orders change status).
      const rng = new SmallRng(seed, `bacpac/${table.name}/newest`);
      const window = 2 * count;
      while (updated.size < count) updated.add(table.rows - window + rng.int(0, window - 1));
    } else {
      const rng = new SmallRng(seed, `bacpac/${table.name}/scattered`);
      while (updated.size < count) updated.add(rng.int(0, table.rows - 1));
    }
  }
  return { updated, rowCount };
}

/** The data file of a table in export `version`. */
export function tableData(table: TableSpec, version: number, seed: string): { data: Buffer; rows: number; rowsUpdated: number; rowsAppended: number } {
  const { updated, rowCount } = planTable(table, version, seed);
  const rng = new SmallRng(seed, `bacpac/${table.name}/rows`);
  const out = new Writer();
  const now = EXPORT_TIMES[version - 1];
  for (let row = 0; row < rowCount; row++) {
    const update = updated.has(row) ? new SmallRng(seed, `bacpac/${table.name}/${row}/update-${version}`) : undefined;
    for (const column of table.columns) {
      if (update !== undefined && column.mutable === true) {
        // The base stream is consumed the same way in every export; the update overrides the value.
        writeValue(new Writer(), column, row, table.rows, rng, undefined);
        writeValue(out, column, row, table.rows, update, column.type === "datetime" ? now - 3_600_000 : undefined);
      } else {
        writeValue(out, column, row, table.rows, rng, undefined);
      }
    }
  }
  return { data: Buffer.from(out.done()), rows: rowCount, rowsUpdated: updated.size, rowsAppended: rowCount - table.rows };
}

function xml(text: string): Buffer {
  return Buffer.from(text, "utf8");
}

export interface BacpacEntry {
  name: string;
  data: Buffer;
}

export interface BacpacExport {
  version: number;
  entries: BacpacEntry[];
  zip: Buffer;
  /** Per table: rows, rows updated and appended since export 1. */
  tables: Array<{ table: string; rows: number; rowsUpdated: number; rowsAppended: number; bytes: number }>;
}

/** Export `version` (1 or 2) of the sample database. */
export function makeExport(version: number, seed: string): BacpacExport {
  const tables = TABLES.map((table) => ({ table, ...tableData(table, version, seed) }));
  const model =
    `<?xml version="1.0" encoding="utf-8"?>\n<DataSchemaModel FileFormatVersion="1.2" SchemaVersion="2.9" ` +
    `DspName="Microsoft.Data.Tools.Schema.Sql.SqlAzureV12DatabaseSchemaProvider" CollationLcid="1033" CollationCaseSensitive="False">\n<Model>\n` +
    TABLES.map(
      (t) =>
        `<Element Type="SqlTable" Name="[dbo].[${t.name}]">\n` +
        t.columns.map((col) => `  <Element Type="SqlSimpleColumn" Name="[dbo].[${t.name}].[${col.name}]"><Property Name="SqlType" Value="${col.type}" /></Element>\n`).join("") +
        `  <Element Type="SqlPrimaryKeyConstraint" Name="[dbo].[PK_${t.name}]" />\n</Element>\n`,
    ).join("") +
    `</Model>\n</DataSchemaModel>\n`;
  const origin =
    `<?xml version="1.0" encoding="utf-8"?>\n<DacOrigin xmlns="http://schemas.microsoft.com/sqlserver/dac/Serialization/2012/02">\n` +
    `<PackageProperties><Version>3.1.0.0</Version><ContainsExportedData>true</ContainsExportedData></PackageProperties>\n` +
    `<Operation><Identity>00000000-0000-4000-8000-00000000000${version}</Identity><Start>${new Date(EXPORT_TIMES[version - 1]).toISOString()}</Start></Operation>\n` +
    `<Server>bench-sql.database.windows.net</Server><Database>shop</Database>\n` +
    tables.map((t) => `<TableRowCount Name="[dbo].[${t.table.name}]">${t.rows}</TableRowCount>`).join("\n") +
    `\n</DacOrigin>\n`;
  const entries: BacpacEntry[] = [
    { name: "model.xml", data: xml(model) },
    { name: "DacMetadata.xml", data: xml(`<?xml version="1.0" encoding="utf-8"?>\n<DacType xmlns="http://schemas.microsoft.com/sqlserver/dac/Serialization/2012/02"><Name>shop</Name><Version>1.0.0.0</Version></DacType>\n`) },
    { name: "Origin.xml", data: xml(origin) },
    ...tables.map((t) => ({ name: `Data/dbo.${t.table.name}/TableData-000-00000.BCP`, data: t.data })),
    { name: "[Content_Types].xml", data: xml(`<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="text/xml" /><Default Extension="BCP" ContentType="application/octet-stream" /></Types>`) },
  ];
  return {
    version,
    entries,
    zip: writeZip(entries),
    tables: tables.map((t) => ({ table: t.table.name, rows: t.rows, rowsUpdated: t.rowsUpdated, rowsAppended: t.rowsAppended, bytes: t.data.length })),
  };
}
