/**
 * A minimal BACPAC: a zip (deflate, CRC-32) holding model.xml (the tables and their columns),
 * Origin.xml (what exported it and when) and one data file per table (JSON lines here; a real BACPAC
 * uses BCP native files). The zip writer and reader are small, stream-free and strict.
 */
import zlib from "node:zlib";

export type TableRows = Array<Record<string, unknown>>;
export type DatabaseContent = Record<string, TableRows>;

interface ZipEntry {
  name: string;
  data: Buffer;
}

export function writeZip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, "utf8");
    const compressed = zlib.deflateRawSync(entry.data);
    const crc = zlib.crc32(entry.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt32LE(0, 10); // time, date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(entry.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    locals.push(local, name, compressed);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(compressed.length, 20);
    central.writeUInt32LE(entry.data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += 30 + name.length + compressed.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

export function readZip(zip: Buffer): Map<string, Buffer> {
  const endAt = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (endAt < 0 || endAt + 22 > zip.length) throw new Error("not a zip file: no end of central directory");
  const count = zip.readUInt16LE(endAt + 10);
  let position = zip.readUInt32LE(endAt + 16);
  const entries = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(position) !== 0x02014b50) throw new Error("corrupt zip: bad central directory entry");
    const method = zip.readUInt16LE(position + 10);
    const crc = zip.readUInt32LE(position + 16);
    const compressedSize = zip.readUInt32LE(position + 20);
    const size = zip.readUInt32LE(position + 24);
    const nameLength = zip.readUInt16LE(position + 28);
    const extraLength = zip.readUInt16LE(position + 30);
    const commentLength = zip.readUInt16LE(position + 32);
    const localAt = zip.readUInt32LE(position + 42);
    const name = zip.subarray(position + 46, position + 46 + nameLength).toString("utf8");
    const dataAt = localAt + 30 + zip.readUInt16LE(localAt + 26) + zip.readUInt16LE(localAt + 28);
    const raw = zip.subarray(dataAt, dataAt + compressedSize);
    const data = method === 8 ? zlib.inflateRawSync(raw) : method === 0 ? Buffer.from(raw) : undefined;
    if (!data) throw new Error(`zip entry ${name} uses unsupported compression method ${method}`);
    if (data.length !== size || zlib.crc32(data) !== crc) throw new Error(`zip entry ${name} is corrupt (size or CRC-32 mismatch)`);
    entries.set(name, data);
    position += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

function xmlEscape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function columnsOf(rows: TableRows): string[] {
  const columns = new Set<string>();
  for (const row of rows) for (const key of Object.keys(row)) columns.add(key);
  return [...columns];
}

const DATA_PREFIX = "Data/dbo.";
const DATA_FILE = "/TableData-000-00000.jsonl";

export function writeBacpac(databaseName: string, serverName: string, content: DatabaseContent): Buffer {
  const tables = Object.keys(content).sort();
  const model =
    `<?xml version="1.0" encoding="utf-8"?>\n<DataSchemaModel FileFormatVersion="1.2" SchemaVersion="2.9" DspName="Microsoft.Data.Tools.Schema.Sql.SqlAzureV12DatabaseSchemaProvider">\n<Model>\n` +
    tables
      .map((table) =>
        `<Element Type="SqlTable" Name="[dbo].[${xmlEscape(table)}]">` +
        columnsOf(content[table]!).map((c) => `<Element Type="SqlSimpleColumn" Name="[dbo].[${xmlEscape(table)}].[${xmlEscape(c)}]" />`).join("") +
        `</Element>\n`,
      )
      .join("") +
    `</Model>\n</DataSchemaModel>\n`;
  const origin =
    `<?xml version="1.0" encoding="utf-8"?>\n<DacOrigin xmlns="http://schemas.microsoft.com/sqlserver/dac/Serialization/2012/02">\n` +
    `<PackageProperties><Version>3.1.0.0</Version><ContainsExportedData>true</ContainsExportedData></PackageProperties>\n` +
    `<Operation><Identity>${crypto.randomUUID()}</Identity><Start>${new Date().toISOString()}</Start></Operation>\n` +
    `<Server>${xmlEscape(serverName)}</Server><Database>${xmlEscape(databaseName)}</Database>\n` +
    tables.map((t) => `<TableRowCount Name="[dbo].[${xmlEscape(t)}]">${content[t]!.length}</TableRowCount>`).join("\n") +
    `\n</DacOrigin>\n`;
  const entries: ZipEntry[] = [
    { name: "model.xml", data: Buffer.from(model) },
    { name: "Origin.xml", data: Buffer.from(origin) },
    ...tables.map((table) => ({
      name: `${DATA_PREFIX}${table}${DATA_FILE}`,
      data: Buffer.from(content[table]!.map((row) => JSON.stringify(row)).join("\n")),
    })),
  ];
  return writeZip(entries);
}

export function readBacpac(file: Buffer): DatabaseContent {
  const entries = readZip(file);
  if (!entries.has("model.xml") || !entries.has("Origin.xml")) throw new Error("not a BACPAC: model.xml or Origin.xml is missing");
  const model = entries.get("model.xml")!.toString("utf8");
  const content: DatabaseContent = {};
  for (const match of model.matchAll(/<Element Type="SqlTable" Name="\[dbo\]\.\[([^\]]+)\]">/g)) {
    const table = match[1]!.replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
    const data = entries.get(`${DATA_PREFIX}${table}${DATA_FILE}`);
    if (!data) throw new Error(`BACPAC is missing the data of table ${table}`);
    const text = data.toString("utf8");
    content[table] = text ? text.split("\n").map((line) => JSON.parse(line)) : [];
  }
  return content;
}
