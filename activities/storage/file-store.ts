/**
 * ObjectStore over the local filesystem, for `file://` URIs and plain paths.
 */

import { randomBytes } from 'node:crypto';
import { promises as fs, type Dirent } from 'node:fs';
import * as path from 'node:path';

import { sha256Hex } from './hash';
import type { ObjectEntry, ObjectStore, PutOptions, StoredObject } from './object-store';
import { parseUri, toFileUri } from './uri';

/** Name prefix of the temporary files that `put` renames into place. `list` skips them. */
const TEMP_PREFIX = '.skynewt-tmp-';

export class FileStore implements ObjectStore {
  async get(uri: string, signal?: AbortSignal): Promise<StoredObject> {
    const filePath = toLocalPath(uri);
    let body: Buffer;
    try {
      body = await fs.readFile(filePath, { signal });
    } catch (error) {
      if (errorCode(error) === 'ENOENT') {
        throw notFound(uri, error);
      }
      throw error;
    }
    return { body, etag: `sha256:${sha256Hex(body)}` };
  }

  async stream(uri: string, signal?: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const filePath = toLocalPath(uri);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(filePath, 'r');
    } catch (error) {
      if (errorCode(error) === 'ENOENT') {
        throw notFound(uri, error);
      }
      throw error;
    }
    // The stream closes the handle when it ends, fails or is destroyed.
    return handle.createReadStream({ signal });
  }

  /**
   * Writes the bytes to a temporary file in the target folder, flushes it to disk and renames
   * it over the target, so readers see either the old object or the whole new one.
   */
  async put(uri: string, body: Buffer | string, options: PutOptions = {}): Promise<void> {
    const filePath = toLocalPath(uri);
    const folder = path.dirname(filePath);
    await fs.mkdir(folder, { recursive: true });

    const tempPath = path.join(folder, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const handle = await fs.open(tempPath, 'wx');
      try {
        await handle.writeFile(body, { signal: options.signal });
        await handle.sync();
      } finally {
        await handle.close();
      }
      options.signal?.throwIfAborted();
      await fs.rename(tempPath, filePath);
    } catch (error) {
      await fs.rm(tempPath, { force: true });
      throw error;
    }
  }

  /**
   * Lists the regular files below a folder, recursively, in URI order. A path that is missing
   * or is not a folder lists nothing, as an S3 prefix with no keys does. Entries carry no etag
   * because that would mean hashing every file.
   */
  async *list(prefixUri: string, signal?: AbortSignal): AsyncIterable<ObjectEntry> {
    yield* walk(toLocalPath(prefixUri), signal);
  }

  async exists(uri: string): Promise<boolean> {
    try {
      const stats = await fs.stat(toLocalPath(uri));
      return stats.isFile();
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
        return false;
      }
      throw error;
    }
  }

  /** Deletes a file. Deleting a missing file succeeds, as it does on S3. */
  async delete(uri: string): Promise<void> {
    try {
      await fs.unlink(toLocalPath(uri));
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') {
        throw error;
      }
    }
  }
}

interface WalkChild {
  path: string;
  /** URI of the child, with a trailing `/` for folders, so that sorting by it yields URI order overall. */
  sortKey: string;
  isFolder: boolean;
}

/**
 * Visits a folder depth-first with children sorted by their URI plus `/` for folders. File names
 * contain no `/`, so each folder's entries form one contiguous range of the sorted URIs, and the
 * walk emits URIs in sorted order without holding the whole listing in memory.
 */
async function* walk(folder: string, signal?: AbortSignal): AsyncGenerator<ObjectEntry> {
  signal?.throwIfAborted();
  let dirents: Dirent[];
  try {
    // NOTE: names are read as UTF-8 strings, so a file whose name is not valid UTF-8 cannot be
    // stat'ed under the decoded name and is left out of the listing without a failed record.
    dirents = await fs.readdir(folder, { withFileTypes: true });
  } catch (error) {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
      return;
    }
    throw error;
  }

  const children: WalkChild[] = [];
  for (const dirent of dirents) {
    if (dirent.name.startsWith(TEMP_PREFIX)) {
      continue;
    }
    const childPath = path.join(folder, dirent.name);
    let isFolder = dirent.isDirectory();
    let isFile = dirent.isFile();
    if (dirent.isSymbolicLink()) {
      // NOTE: links to files are listed, links to folders are skipped so a link cycle cannot
      // make the walk endless.
      const target = await fs.stat(childPath).catch(() => undefined);
      isFolder = false;
      isFile = target?.isFile() ?? false;
    }
    if (!isFolder && !isFile) {
      continue;
    }
    const uri = toFileUri(childPath);
    children.push({ path: childPath, sortKey: isFolder ? `${uri}/` : uri, isFolder });
  }
  children.sort(compareSortKeys);

  for (const child of children) {
    if (child.isFolder) {
      yield* walk(child.path, signal);
      continue;
    }
    const stats = await fs.stat(child.path).catch(() => undefined);
    // A file deleted between readdir and stat is simply not listed.
    if (stats?.isFile()) {
      yield { uri: child.sortKey, size: stats.size };
    }
  }
}

/** Compares by UTF-16 code units, which for the ASCII-only file URIs is byte order. */
function compareSortKeys(a: WalkChild, b: WalkChild): number {
  if (a.sortKey < b.sortKey) {
    return -1;
  }
  return a.sortKey > b.sortKey ? 1 : 0;
}

function toLocalPath(uri: string): string {
  const parsed = parseUri(uri);
  if (parsed.scheme !== 'file') {
    throw new Error(`FileStore cannot access ${uri}: it only handles file:// URIs and local paths.`);
  }
  return parsed.path;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function notFound(uri: string, cause: unknown): Error {
  const error = new Error(`Object not found: ${uri}`, { cause });
  error.name = 'NotFound';
  return error;
}
