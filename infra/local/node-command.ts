/**
 * Command lines that run this project's TypeScript entry points with Node.js and the tsx loader,
 * from any working directory.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** `node --import <tsx loader> <script>` with absolute paths. */
export function tsNodeCommand(scriptFromRoot: string, ...args: string[]): string[] {
  const loader = pathToFileURL(require.resolve('tsx')).href;
  return [process.execPath, '--import', loader, path.join(REPO_ROOT, scriptFromRoot), ...args];
}
