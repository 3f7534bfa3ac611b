/**
 * Errors raised by the model registries. Each class sets a stable `name`, so callers can branch
 * on `error.name` even after the error crossed a Temporal payload boundary and lost its class.
 */

export class ModelNotFound extends Error {
  override readonly name = 'ModelNotFound';

  constructor(
    readonly model: string,
    readonly version: string | undefined,
    /** Versions of `model` that do exist, so the message can offer them. */
    readonly existingVersions: string[],
  ) {
    super(describeMissingModel(model, version, existingVersions));
  }
}

function describeMissingModel(model: string, version: string | undefined, existing: string[]): string {
  const reference = version === undefined ? `Model ${model}` : `Model ${model}@${version}`;
  if (existing.length === 0) {
    return `${reference} not found: no versions of ${model} are registered. Register one with \`skynewt model register ${model} FILE.onnx --task TASK\`.`;
  }
  return `${reference} not found. Registered versions of ${model}: ${existing.join(', ')}.`;
}

export class ModelVersionConflict extends Error {
  override readonly name = 'ModelVersionConflict';

  constructor(
    readonly model: string,
    readonly version: string,
    /** sha256 of the bytes already registered under this version. */
    readonly registeredSha256: string,
    /** sha256 of the bytes that the rejected request tried to register. */
    readonly requestedSha256: string,
  ) {
    super(
      `Model ${model}@${version} is already registered with sha256 ${registeredSha256}, ` +
        `and the new file has sha256 ${requestedSha256}. Registered versions are immutable; ` +
        `register the new file under a new --version.`,
    );
  }
}

/** Raised when the same bytes are registered again under a version with other settings. */
export class ModelSettingsConflict extends Error {
  override readonly name = 'ModelVersionConflict';

  constructor(readonly model: string, readonly version: string, readonly changed: string[]) {
    super(
      `Model ${model}@${version} is already registered with the same file but other settings (${changed.join('; ')}). ` +
        `Registered versions are immutable; register these settings under a new --version.`,
    );
  }
}

/** Raised for an invalid model name or version string. */
export class InvalidModelName extends Error {
  override readonly name = 'InvalidModelName';

  constructor(
    readonly field: 'name' | 'version' | 'alias',
    readonly value: string,
    readonly pattern: RegExp,
  ) {
    super(`Invalid model ${field} ${JSON.stringify(value)}: it must match ${pattern.source}.`);
  }
}

/** Raised for a register request whose task, preprocessing, labels, threshold or bytes are invalid. */
export class InvalidModelSpec extends Error {
  override readonly name = 'InvalidModelSpec';
}

/** Raised when an alias and a version label of one model would share a name. */
export class ModelAliasConflict extends Error {
  override readonly name = 'ModelAliasConflict';
}
