/**
 * Worker-thread entry that owns the ONNX Runtime sessions. onnxruntime-node 1.31 runs
 * `session.run()` synchronously on the calling thread, so it runs here, away from the
 * activity worker's event loop. ModelRunner in model-runner.ts starts and drives this file.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type * as Ort from 'onnxruntime-node';

/** Options passed to the thread as `workerData`. */
export interface ModelThreadOptions {
  /** Marks the worker as a model thread, so that loading this file elsewhere starts nothing. */
  role: typeof MODEL_THREAD_ROLE;
  intraOpThreads?: number;
}

export const MODEL_THREAD_ROLE = 'skynewt-model-thread';

export type ModelThreadRequest =
  | { id: number; type: 'load'; sha256: string; bytes: Uint8Array; executionProviders: string[] }
  | { id: number; type: 'run'; sha256: string; data: Float32Array; dims: number[] };

export type ModelThreadReply =
  | { id: number; ok: true; type: 'load'; loadMs: number }
  | { id: number; ok: true; type: 'run'; data: Float32Array; dims: number[]; inferenceMs: number }
  | { id: number; ok: false; error: { name: string; message: string } };

/** First message the thread posts once onnxruntime-node has loaded. */
export interface ModelThreadReady {
  type: 'ready';
}

function startThread(port: MessagePort, options: ModelThreadOptions): void {
  // Required here rather than imported at the top, so that loading this file in the main
  // thread (ModelRunner imports the helpers below) does not load the native addon.
  const ort = require('onnxruntime-node') as typeof Ort;
  const sessions = new Map<string, Ort.InferenceSession>();

  const sessionOptions: Ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all' };
  if (options.intraOpThreads !== undefined) {
    sessionOptions.intraOpNumThreads = options.intraOpThreads;
  }

  async function load(sha256: string, bytes: Uint8Array, executionProviders: string[]): Promise<number> {
    const started = performance.now();
    if (!sessions.has(sha256)) {
      sessions.set(sha256, await ort.InferenceSession.create(bytes, { ...sessionOptions, executionProviders }));
    }
    return performance.now() - started;
  }

  async function run(
    sha256: string,
    data: Float32Array,
    dims: number[],
  ): Promise<{ data: Float32Array; dims: number[]; inferenceMs: number }> {
    const session = sessions.get(sha256);
    if (session === undefined) {
      throw new Error(`model ${sha256} is not loaded in the model thread; call load() before run()`);
    }

    const started = performance.now();
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, dims) };
    const results = await session.run(feeds);
    const inferenceMs = performance.now() - started;

    const outputName = session.outputNames[0];
    const output = results[outputName];
    if (output.type !== 'float32') {
      throw new Error(`model ${sha256} output ${outputName} has type ${output.type}; only float32 outputs are supported`);
    }
    return { data: output.data as Float32Array, dims: Array.from(output.dims), inferenceMs };
  }

  port.on('message', (request: ModelThreadRequest) => {
    void handle(request);
  });

  async function handle(request: ModelThreadRequest): Promise<void> {
    try {
      if (request.type === 'load') {
        const loadMs = await load(request.sha256, request.bytes, request.executionProviders);
        post({ id: request.id, ok: true, type: 'load', loadMs });
      } else {
        const result = await run(request.sha256, request.data, request.dims);
        post({ id: request.id, ok: true, type: 'run', ...result }, transferList(result.data));
      }
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      post({ id: request.id, ok: false, error: { name: error.name, message: error.message } });
    }
  }

  function post(reply: ModelThreadReply, transfer: ArrayBuffer[] = []): void {
    port.postMessage(reply, transfer);
  }

  const ready: ModelThreadReady = { type: 'ready' };
  port.postMessage(ready);
}

/**
 * Returns the buffer to transfer for a typed array, or none when the array is a view into a
 * larger or shared buffer, because transferring would detach memory the array does not own.
 */
export function transferList(array: ArrayBufferView): ArrayBuffer[] {
  const buffer = array.buffer;
  if (!(buffer instanceof ArrayBuffer)) {
    return [];
  }
  if (array.byteOffset !== 0 || array.byteLength !== buffer.byteLength) {
    return [];
  }
  return [buffer];
}

/**
 * Returns the file and execArgv that start this file as a worker thread. `__filename` is this
 * file: `.ts` when run from source under tsx or vitest, `.js` when compiled.
 */
export function modelThreadEntry(): { file: string; execArgv: string[] } {
  const isTypeScript = path.extname(__filename) === '.ts';
  return { file: __filename, execArgv: threadExecArgv(isTypeScript ? typeScriptExecArgv() : [...process.execArgv]) };
}

/** Flags that take the next argument as their value and apply to a worker thread too. */
const THREAD_FLAGS_WITH_VALUE = new Set(['--require', '-r', '--import', '--loader', '--experimental-loader', '--conditions', '-C']);

/**
 * Keeps the module-loading flags of the parent and drops process-wide ones such as
 * `--expose-gc` or `--max-old-space-size`, which `new Worker()` rejects with
 * ERR_WORKER_INVALID_EXEC_ARGV.
 */
function threadExecArgv(args: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const name = arg.split('=')[0];
    if (THREAD_FLAGS_WITH_VALUE.has(name)) {
      kept.push(arg);
      if (!arg.includes('=') && i + 1 < args.length) kept.push(args[++i]);
    } else if (name === '--enable-source-maps' || name === '--no-warnings' || name.startsWith('--experimental-')) {
      kept.push(arg);
    }
  }
  return kept;
}

/**
 * Returns the parent's execArgv with tsx's CommonJS hook in place of its ESM loader. On
 * Node 20.20, a worker started with tsx's `--import` loader rejects a `.ts` entry file with
 * "Unknown file extension", while tsx's `--require` hook loads it.
 * NOTE: other `--import` flags are kept and may cause the same failure.
 */
function typeScriptExecArgv(): string[] {
  const args: string[] = [];
  const parentArgs = process.execArgv;
  for (let i = 0; i < parentArgs.length; i++) {
    const arg = parentArgs[i];
    if (arg === '--import' && parentArgs[i + 1]?.includes('tsx')) {
      i++;
      continue;
    }
    if (arg.startsWith('--import=') && arg.includes('tsx')) {
      continue;
    }
    args.push(arg);
  }
  args.push('--require', require.resolve('tsx/cjs'));
  return args;
}

// Test runners may load this file inside their own worker threads, so the role marker, not
// parentPort alone, decides whether this thread serves models.
const threadOptions = workerData as Partial<ModelThreadOptions> | null;
if (parentPort !== null && threadOptions?.role === MODEL_THREAD_ROLE) {
  startThread(parentPort, threadOptions as ModelThreadOptions);
}
