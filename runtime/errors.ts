/**
 * One error type per failure a user can act on. Each carries the process exit code the CLI uses
 * and a message that says what happened and what to do about it.
 */
export class BulwarkError extends Error {
  readonly exitCode: number;

  constructor(message: string, exitCode = 1, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Bad command line or bad input file: exit 2. */
export class UsageError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 2, options);
  }
}

/** No key of the vault opens with what was given: exit 3. */
export class WrongKeyError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 3, options);
  }
}

/** The vault (or a point in it) does not exist where it was looked for: exit 4. */
export class NotFoundError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 4, options);
  }
}

/** Stored bytes failed authentication or do not match what references them: exit 5. */
export class IntegrityError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 5, options);
  }
}

/** The thing to back up cannot be read: exit 6. */
export class SourceError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 6, options);
  }
}

/** Another process holds the vault in a way that excludes this operation: exit 7. */
export class VaultBusyError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 7, options);
  }
}

/** The storage service or Azure refused or failed after retries: exit 8. */
export class ServiceError extends BulwarkError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 8, options);
  }
}

/** A store object that was expected is missing. */
export class ObjectNotFoundError extends BulwarkError {
  readonly key: string;

  constructor(key: string, where: string) {
    super(`object ${key} is missing from ${where}`, 5);
    this.key = key;
  }
}

/** A create-only write found the object already there. */
export class ObjectExistsError extends BulwarkError {
  readonly key: string;

  constructor(key: string, where: string) {
    super(`object ${key} already exists in ${where}`, 1);
    this.key = key;
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
