/**
 * An HTTP codec endpoint for the Temporal Web UI: POST /encode and POST /decode take and
 * return `{"payloads": [...]}` with payloads in proto3 JSON form (base64 `data` and metadata
 * values). It listens on 127.0.0.1 only and allows cross-origin requests from one UI origin.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';

export const CODEC_SERVER_HOST = '127.0.0.1';

/** Largest request body accepted, in bytes. NOTE: a guess sized for a page of history payloads. */
export const MAX_CODEC_REQUEST_BYTES = 32 * 1024 * 1024;

const ALLOWED_HEADERS = 'content-type,x-namespace,authorization';

export interface CodecServerOptions {
  codec: PayloadCodec;
  /** TCP port on 127.0.0.1; 0 picks a free one. */
  port: number;
  /** The one origin allowed cross-origin requests, e.g. `http://127.0.0.1:8233`. */
  origin: string;
  /** Bearer token every /encode and /decode request must carry; null accepts any request. */
  token: string | null;
  /** Receives one line per request error; defaults to console.error. */
  log?: (message: string) => void;
}

export interface CodecServer {
  /** Base URL, e.g. `http://127.0.0.1:8888`. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** JSON form of a payload, as the Web UI sends it. */
interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Starts the codec server and resolves once it listens. */
export async function startCodecServer(options: CodecServerOptions): Promise<CodecServer> {
  const log = options.log ?? ((message: string) => console.error(message));
  const origin = normalizeOrigin(options.origin);
  const server = createServer((request, response) => {
    handle(request, response, options, origin).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const message = err instanceof Error ? err.message : String(err);
      log(`Codec server: ${request.method} ${request.url} failed with ${status}: ${message}`);
      if (!response.headersSent) sendJson(response, status, { error: message });
      else response.end();
    });
  });
  await listen(server, options.port);
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${CODEC_SERVER_HOST}:${port}`,
    port,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}

/** Returns the scheme, host and port of a URL, the form browsers send in the Origin header. */
export function normalizeOrigin(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`Invalid origin ${JSON.stringify(value)}: expected a URL such as http://127.0.0.1:8233.`);
  }
  return url.origin;
}

async function handle(request: IncomingMessage, response: ServerResponse, options: CodecServerOptions, allowedOrigin: string): Promise<void> {
  const requestOrigin = request.headers.origin;
  // Requests without an Origin header come from non-browser clients such as curl or scripts.
  if (requestOrigin !== undefined && requestOrigin !== allowedOrigin) {
    throw new HttpError(403, `Origin ${requestOrigin} is not allowed; the codec server accepts ${allowedOrigin} (set it with --origin).`);
  }
  if (requestOrigin !== undefined) {
    response.setHeader('Access-Control-Allow-Origin', allowedOrigin);
    response.setHeader('Access-Control-Allow-Credentials', 'true');
    response.setHeader('Vary', 'Origin');
  }

  const path = new URL(request.url ?? '/', 'http://codec').pathname;
  if (path !== '/encode' && path !== '/decode') throw new HttpError(404, `Not found: ${path}; use POST /encode or POST /decode.`);
  if (request.method === 'OPTIONS') {
    // Browsers send CORS preflight requests without credentials, so they are not authenticated.
    response.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
    response.setHeader('Access-Control-Allow-Headers', ALLOWED_HEADERS);
    response.setHeader('Access-Control-Max-Age', '600');
    response.writeHead(204).end();
    return;
  }
  if (request.method !== 'POST') throw new HttpError(405, `Method ${request.method} is not allowed on ${path}; use POST.`);
  if (options.token !== null && !hasBearerToken(request, options.token)) {
    response.setHeader('WWW-Authenticate', 'Bearer');
    throw new HttpError(401, 'Missing or invalid bearer token in the Authorization header.');
  }

  const payloads = parsePayloads(await readBody(request)).map(fromJson);
  const result = path === '/encode' ? await options.codec.encode(payloads) : await options.codec.decode(payloads).catch((err: Error) => {
    throw new HttpError(400, err.message);
  });
  sendJson(response, 200, { payloads: result.map(toJson) });
}

function hasBearerToken(request: IncomingMessage, token: string): boolean {
  const match = /^Bearer (.+)$/.exec(request.headers.authorization ?? '');
  if (match === null) return false;
  const given = Buffer.from(match[1]);
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_CODEC_REQUEST_BYTES) throw new HttpError(413, `Request body exceeds ${MAX_CODEC_REQUEST_BYTES} bytes.`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parsePayloads(body: string): JsonPayload[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    throw new HttpError(400, `Invalid JSON body: ${(err as Error).message}; expected {"payloads": [...]}.`);
  }
  const payloads = (parsed as { payloads?: unknown } | null)?.payloads;
  if (!Array.isArray(payloads)) throw new HttpError(400, 'Invalid body: expected {"payloads": [...]}.');
  payloads.forEach((payload: unknown, index) => {
    const { metadata, data } = (payload ?? {}) as { metadata?: unknown; data?: unknown };
    const validMetadata = metadata === undefined || (typeof metadata === 'object' && metadata !== null && Object.values(metadata).every((value) => typeof value === 'string'));
    if (typeof payload !== 'object' || payload === null || !validMetadata || (data !== undefined && typeof data !== 'string')) {
      throw new HttpError(400, `Invalid payloads[${index}]: expected {"metadata": {name: base64}, "data": base64}.`);
    }
  });
  return payloads as JsonPayload[];
}

function fromJson(payload: JsonPayload): Payload {
  const metadata: Record<string, Uint8Array> = {};
  for (const [name, value] of Object.entries(payload.metadata ?? {})) metadata[name] = Buffer.from(value, 'base64');
  return { metadata, data: Buffer.from(payload.data ?? '', 'base64') };
}

function toJson(payload: Payload): JsonPayload {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(payload.metadata ?? {})) metadata[name] = Buffer.from(value).toString('base64');
  return { metadata, data: Buffer.from(payload.data ?? new Uint8Array()).toString('base64') };
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, CODEC_SERVER_HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
