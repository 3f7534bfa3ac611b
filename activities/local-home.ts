/**
 * Finds SkyNewt's local state folder (`.skynewt`: registry, results, dev server database, logs).
 * Like git with `.git`, commands run from a subfolder find the folder of the project above them.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

/** The checkout this code runs from; its `.skynewt` is the fallback. */
const PACKAGE_ROOT = path.resolve(__dirname, '..');

/**
 * Returns SKYNEWT_HOME when set; else the nearest `.skynewt` folder in the current folder or
 * above it; else `.skynewt` in the SkyNewt checkout.
 */
export function skynewtHome(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string {
  if (env.SKYNEWT_HOME) return path.resolve(env.SKYNEWT_HOME);
  for (let folder = path.resolve(cwd); ; folder = path.dirname(folder)) {
    if (existsSync(path.join(folder, '.skynewt'))) return path.join(folder, '.skynewt');
    if (path.dirname(folder) === folder) break;
  }
  return path.join(PACKAGE_ROOT, '.skynewt');
}

/**
 * Keeps the AWS SDK away from the instance metadata service unless the process is configured
 * for EC2 (SKYNEWT_EC2=true); off EC2 its credential chain would otherwise try 169.254.169.254.
 */
export function disableMetadataOffEc2(env: NodeJS.ProcessEnv = process.env): void {
  if (env.SKYNEWT_EC2 !== 'true' && env.AWS_EC2_METADATA_DISABLED === undefined) env.AWS_EC2_METADATA_DISABLED = 'true';
}
