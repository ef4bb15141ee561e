/**
 * A key-encryption key (KEK) provider. The vault's data keys are wrapped under a KEK; each
 * provider makes a fresh KEK and later recovers it from the public parameters stored beside the
 * wrapped data keys. The passphrase provider derives it (memory-hard KDF); the Azure Key Vault
 * provider wraps a random KEK with the customer's key. The engine sees only this interface.
 */
export type KeyParams = Record<string, unknown>;

export interface KeyEncryptionKeyProvider {
  /** Stored in the key object; only key objects of this kind are tried with this provider. */
  readonly kind: string;
  /** A fresh KEK and the parameters (salt, wrapped form, key id...) that recover it later. */
  create(): Promise<{ kek: Buffer; params: KeyParams }>;
  /** Recovers the KEK; throws WrongKeyError when this provider cannot (wrong key, no access). */
  recover(params: KeyParams): Promise<Buffer>;
  /** One line for `bulwark key list` (never a secret). */
  describe(params: KeyParams): string;
}
