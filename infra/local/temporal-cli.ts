import * as fs from 'node:fs';
import * as path from 'node:path';

/** Repository root, two levels above infra/local/. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

function isExecutableFile(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Searches the PATH entries of `env` for an executable named `name`; returns its path or null. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const entries = (env.PATH ?? '').split(path.delimiter).filter((entry) => entry !== '');
  for (const entry of entries) {
    const candidate = path.join(entry, name);
    if (isExecutableFile(candidate)) {
      return candidate;
    }
  }
  return null;
}

/**
 * Resolves the Temporal CLI: `temporal` on PATH first, then `<root>/.venv/bin/temporal`
 * (installed by infra/local/bootstrap.js). Throws when neither exists.
 */
export function resolveTemporalCli(root: string = REPO_ROOT): string {
  const onPath = findOnPath('temporal');
  if (onPath !== null) {
    return onPath;
  }

  const inVenv = path.join(root, '.venv', 'bin', 'temporal');
  if (isExecutableFile(inVenv)) {
    return inVenv;
  }

  throw new Error(
    `Temporal CLI not found: no executable "temporal" on PATH and none at ${inVenv}. ` +
      'Run `node infra/local/bootstrap.js` from the repository root to install it.',
  );
}
