/**
 * The customer-managed key: a key in the customer's Azure Key Vault wraps a random key-encryption
 * key with RSA-OAEP-256 through CryptographyClient. The versioned key id used is kept in the key
 * object, so after the customer rotates the key, objects wrapped with an older version still open;
 * `bulwark key rotate` rewraps to the newest version (a new small key object, no data touched).
 */
import { randomBytes } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import { ServiceError, UsageError, WrongKeyError } from "../errors.ts";
import { requiresAction } from "../azure/permissions.ts";
import type { KeyEncryptionKeyProvider, KeyParams } from "./provider.ts";

requiresAction("Microsoft.KeyVault/vaults/keys/read", "key vault provider: find the key's newest version", { dataAction: true });
requiresAction("Microsoft.KeyVault/vaults/keys/wrap/action", "key vault provider: wrap a key-encryption key", { dataAction: true });
requiresAction("Microsoft.KeyVault/vaults/keys/unwrap/action", "key vault provider: unwrap a key-encryption key", { dataAction: true });

const ALGORITHM = "RSA-OAEP-256";

export interface KeyVaultKeyOptions {
  disableChallengeResourceVerification?: boolean;
}

/** https://VAULT/keys/NAME[/VERSION] */
export function parseKeyId(keyId: string): { vaultUrl: string; name: string; version?: string } {
  let url: URL;
  try {
    url = new URL(keyId);
  } catch {
    throw new UsageError(`"${keyId}" is not a Key Vault key id; write https://VAULT.vault.azure.net/keys/NAME[/VERSION]`);
  }
  const parts = url.pathname.split("/").filter(Boolean);
  if (parts[0] !== "keys" || !parts[1] || parts.length > 3) {
    throw new UsageError(`"${keyId}" is not a Key Vault key id; write https://VAULT.vault.azure.net/keys/NAME[/VERSION]`);
  }
  return { vaultUrl: url.origin, name: parts[1], version: parts[2] };
}

export class AzureKeyVaultProvider implements KeyEncryptionKeyProvider {
  readonly kind = "azure-key-vault";
  private readonly keyId: string | undefined;
  private readonly credential: TokenCredential;
  private readonly options: KeyVaultKeyOptions;

  /** keyId: the key to wrap new objects with (versionless means its newest version); optional for opening. */
  constructor(keyId: string | undefined, credential: TokenCredential, options: KeyVaultKeyOptions = {}) {
    if (keyId) parseKeyId(keyId);
    this.keyId = keyId;
    this.credential = credential;
    this.options = options;
  }

  /** The newest version's full id of the configured key. */
  async currentVersionId(): Promise<string> {
    if (!this.keyId) throw new UsageError("no Key Vault key given: pass --key-vault-key https://VAULT/keys/NAME or set BULWARK_KEY_VAULT_KEY");
    const { KeyClient } = await import("@azure/keyvault-keys");
    const { vaultUrl, name, version } = parseKeyId(this.keyId);
    const client = new KeyClient(vaultUrl, this.credential, this.options);
    try {
      const key = await client.getKey(name, version ? { version } : {});
      return key.id!;
    } catch (error) {
      throw keyVaultFailure(`reading key ${this.keyId}`, error);
    }
  }

  async create(): Promise<{ kek: Buffer; params: KeyParams }> {
    const versionId = await this.currentVersionId();
    const kek = randomBytes(32);
    const client = await this.crypto(versionId);
    try {
      const wrapped = await client.wrapKey(ALGORITHM, kek);
      return { kek, params: { keyId: wrapped.keyID ?? versionId, algorithm: ALGORITHM, wrappedKek: Buffer.from(wrapped.result).toString("base64") } };
    } catch (error) {
      throw keyVaultFailure(`wrapping with key ${versionId}`, error);
    }
  }

  async recover(params: KeyParams): Promise<Buffer> {
    const keyId = String(params.keyId);
    if (this.keyId) {
      const wanted = parseKeyId(this.keyId);
      const stored = parseKeyId(keyId);
      if (wanted.vaultUrl !== stored.vaultUrl || wanted.name !== stored.name) throw new WrongKeyError(`key object uses ${keyId}, not ${this.keyId}`);
    }
    const client = await this.crypto(keyId);
    try {
      const unwrapped = await client.unwrapKey(ALGORITHM, Buffer.from(String(params.wrappedKek), "base64"));
      return Buffer.from(unwrapped.result);
    } catch (error) {
      const status = (error as { statusCode?: number }).statusCode;
      if (status === 401 || status === 403) throw keyVaultFailure(`unwrapping with ${keyId}`, error);
      throw new WrongKeyError(`the Key Vault key ${keyId} could not unwrap this vault's key: ${(error as Error).message}`);
    }
  }

  describe(params: KeyParams): string {
    return `Azure Key Vault key ${params.keyId} (${params.algorithm})`;
  }

  private async crypto(keyId: string) {
    const { CryptographyClient } = await import("@azure/keyvault-keys");
    return new CryptographyClient(keyId, this.credential, this.options);
  }
}

function keyVaultFailure(what: string, error: unknown): Error {
  const status = (error as { statusCode?: number }).statusCode;
  if (status === 403) {
    return new ServiceError(`${what}: access denied by Key Vault. Give the backup identity the Bulwark key user role on the key.`, { cause: error });
  }
  if (status === 404) return new UsageError(`${what}: no such key in Key Vault; check the key id`, { cause: error });
  return new ServiceError(`${what} failed: ${(error as Error).message?.split("\n")[0]}`, { cause: error });
}
