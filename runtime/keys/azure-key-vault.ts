/**
 * The customer-managed key: a key in the customer's Azure Key Vault wraps a random key-encryption
 * key with RSA-OAEP-256 through CryptographyClient. The versioned key id used is kept in the key
 * object, so after the customer rotates the key, objects wrapped with an older version still open;
 * `bulwark key rotate` rewraps to the newest version (a new small key object, no data touched).
 *
 * Versions expire (a rotation policy sets each one's expiry). Key Vault refuses to wrap with an
 * expired version but still unwraps with it: "Operations outside the nbf / exp window are
 * automatically disallowed, except for decrypt, release, unwrap, and verify" (MicrosoftDocs/azure-docs
 * articles/key-vault/keys/about-keys-details.md). So new key objects are always wrapped with the
 * current version, and an unwrap goes to Key Vault without the client-side validity check that
 * @azure/keyvault-keys makes (see unwrappingClient).
 */
import { randomBytes } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import type { CryptographyClient, KeyVaultKey } from "@azure/keyvault-keys";
import { ServiceError, UsageError, WrongKeyError, describeError } from "../errors.ts";
import { requiresAction } from "../azure/permissions.ts";
import type { KeyEncryptionKeyProvider, KeyParams } from "./provider.ts";

requiresAction("Microsoft.KeyVault/vaults/keys/read", "key vault provider: find the key's newest version", { identity: ["backup", "prune"], dataAction: true });
requiresAction("Microsoft.KeyVault/vaults/keys/wrap/action", "key vault provider: wrap a key-encryption key", { identity: "backup", dataAction: true });
requiresAction("Microsoft.KeyVault/vaults/keys/unwrap/action", "key vault provider: unwrap a key-encryption key", { identity: ["backup", "prune"], dataAction: true });

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

  /** A new key-encryption key, wrapped with the key's current version (the only one Key Vault lets wrap once older ones expire). */
  async create(): Promise<{ kek: Buffer; params: KeyParams }> {
    const versionId = await this.currentVersionId();
    const kek = randomBytes(32);
    const { CryptographyClient } = await import("@azure/keyvault-keys");
    const client = new CryptographyClient(versionId, this.credential, this.options);
    try {
      const wrapped = await client.wrapKey(ALGORITHM, kek);
      return { kek, params: { keyId: wrapped.keyID ?? versionId, algorithm: ALGORITHM, wrappedKek: Buffer.from(wrapped.result).toString("base64") } };
    } catch (error) {
      if (isExpiryRefusal(error)) {
        throw new ServiceError(
          `wrapping with key ${versionId}: this newest version of the key has expired (or is not active yet), and Key Vault wraps only with a version ` +
            "inside its validity period. Rotate the key in Key Vault (az keyvault key rotate) or extend the version's expiry, then run again",
          { cause: error },
        );
      }
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
    const client = await unwrappingClient(keyId, this.credential, this.options);
    try {
      const unwrapped = await client.unwrapKey(ALGORITHM, Buffer.from(String(params.wrappedKek), "base64"));
      return Buffer.from(unwrapped.result);
    } catch (error) {
      const status = (error as { statusCode?: number }).statusCode;
      if (status === 401 || status === 403) throw keyVaultFailure(`unwrapping with ${keyId}`, error);
      if (status === 404) {
        throw new WrongKeyError(
          `the Key Vault key version ${keyId} that wrapped this vault's key object no longer exists in Key Vault (deleted or purged). ` +
            "If it is only deleted, recover it (az keyvault key recover) and run again; otherwise open the vault with another of its keys",
          { cause: error },
        );
      }
      throw new WrongKeyError(`the Key Vault key ${keyId} could not unwrap this vault's key: ${describeError(error).split("\n")[0]}`, { cause: error });
    }
  }

  describe(params: KeyParams): string {
    return `Azure Key Vault key ${params.keyId} (${params.algorithm})`;
  }

}

/**
 * A CryptographyClient that unwraps with a key version in Key Vault itself, whatever the version's
 * validity period. Given a key id, @azure/keyvault-keys fetches the key and refuses client-side
 * ("Key ... expired at ...") when now is past its expiresOn or before its notBefore, for unwrapKey
 * too (Azure/azure-sdk-for-js sdk/keyvault/keyvault-keys/src/cryptographyClient.ts: unwrapKey calls
 * ensureValid(await fetchKey())), although Key Vault allows unwrap outside that period (the SDK
 * guidelines agree: "Do not crypto-lock customers ... by checking in Decrypt, Verify, or UnwrapKey",
 * Azure/azure-sdk-for-net#7677). Given a KeyVaultKey, the client uses it as it is: one without key
 * material and without a validity period passes ensureValid and, with no local provider for it,
 * sends the unwrap to Key Vault (getProvider), which alone decides.
 */
async function unwrappingClient(keyId: string, credential: TokenCredential, options: KeyVaultKeyOptions): Promise<CryptographyClient> {
  const { CryptographyClient } = await import("@azure/keyvault-keys");
  const { vaultUrl, name, version } = parseKeyId(keyId);
  const remoteOnly: KeyVaultKey = { id: keyId, name, properties: { id: keyId, name, vaultUrl, version } };
  return new CryptographyClient(remoteOnly, credential, options);
}

/** A wrap refused for the version's validity period: by the SDK's own check (a plain Error) or by Key Vault (403). */
function isExpiryRefusal(error: unknown): boolean {
  return /expired|can't be used before|not allowed .*(expired|before)/i.test(describeError(error));
}

function keyVaultFailure(what: string, error: unknown): Error {
  const status = (error as { statusCode?: number }).statusCode;
  if (status === 403) {
    return new ServiceError(`${what}: access denied by Key Vault. Give the backup identity the Bulwark key user role on the key.`, { cause: error });
  }
  if (status === 404) return new UsageError(`${what}: no such key in Key Vault; check the key id`, { cause: error });
  return new ServiceError(`${what} failed: ${(error as Error).message?.split("\n")[0]}`, { cause: error });
}
