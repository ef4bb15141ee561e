/**
 * The recovery passphrase: at least 16 characters, never stored. The KEK is derived with scrypt
 * (memory-hard: 128 MiB per attempt) and a random salt kept in the key object.
 */
import { randomBytes, scrypt } from "node:crypto";
import { readFile } from "node:fs/promises";
import { UsageError } from "../errors.ts";
import type { KeyEncryptionKeyProvider, KeyParams } from "./provider.ts";

export const MIN_PASSPHRASE_LENGTH = 16;
const SCRYPT = { N: 1 << 17, r: 8, p: 1 };

/**
 * The cost new key objects are made with. Test runs only (vitest sets VITEST in the processes it
 * starts and their children) may lower N with BULWARK_TEST_SCRYPT_N, as restic's tests lower their
 * KDF: hundreds of CLI runs each paying 128 MiB and half a second of scrypt is most of the suite's
 * time. Opening always uses the cost recorded in the key object.
 */
function creationCost(): typeof SCRYPT {
  const testN = Number(process.env.VITEST === "true" ? process.env.BULWARK_TEST_SCRYPT_N : undefined);
  return Number.isInteger(testN) && testN >= 1024 && (testN & (testN - 1)) === 0 ? { ...SCRYPT, N: testN } : SCRYPT;
}

function derive(passphrase: string, salt: Buffer, cost: typeof SCRYPT): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(passphrase.normalize("NFC"), salt, 32, { ...cost, maxmem: 256 * cost.N * cost.r + 16 * 1024 * 1024 }, (e, key) =>
      e ? reject(e) : resolve(key),
    ),
  );
}

export class PassphraseProvider implements KeyEncryptionKeyProvider {
  readonly kind = "passphrase";
  private readonly passphrase: string;

  constructor(passphrase: string) {
    if ([...passphrase].length < MIN_PASSPHRASE_LENGTH) {
      throw new UsageError(
        `the passphrase has ${[...passphrase].length} characters; it must have at least ${MIN_PASSPHRASE_LENGTH}. ` +
          "Choose a longer one (a few random words work well).",
      );
    }
    this.passphrase = passphrase;
  }

  async create(): Promise<{ kek: Buffer; params: KeyParams }> {
    const salt = randomBytes(32);
    const cost = creationCost();
    const kek = await derive(this.passphrase, salt, cost);
    return { kek, params: { kdf: "scrypt", ...cost, salt: salt.toString("base64") } };
  }

  async recover(params: KeyParams): Promise<Buffer> {
    const cost = { N: Number(params.N), r: Number(params.r), p: Number(params.p) };
    if (params.kdf !== "scrypt" || !(cost.N > 1 && cost.r > 0 && cost.p > 0) || typeof params.salt !== "string") {
      throw new UsageError("a passphrase key object has unknown key-derivation parameters; is this a newer vault?");
    }
    return derive(this.passphrase, Buffer.from(params.salt, "base64"), cost);
  }

  describe(params: KeyParams): string {
    return `passphrase (scrypt N=${params.N} r=${params.r} p=${params.p})`;
  }
}

/** The passphrase from --passphrase-file, else BULWARK_PASSPHRASE; `what` names it in errors. */
export async function readPassphrase(options: { file?: string; env: string; flag: string }): Promise<PassphraseProvider> {
  let passphrase: string | undefined;
  if (options.file) {
    try {
      passphrase = (await readFile(options.file, "utf8")).replace(/\r?\n$/, "");
    } catch (cause) {
      throw new UsageError(`cannot read the passphrase file ${options.file}: check the path and its permissions`, { cause });
    }
  } else {
    passphrase = process.env[options.env];
  }
  if (passphrase === undefined || passphrase === "") {
    throw new UsageError(`no passphrase: set ${options.env} or pass ${options.flag} FILE`);
  }
  return new PassphraseProvider(passphrase);
}
