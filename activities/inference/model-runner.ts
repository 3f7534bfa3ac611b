/**
 * Runs ONNX models on one dedicated worker thread (model-thread.ts), so that session creation
 * and inference run off the event loop that heartbeats activities and polls Temporal.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import type { ModelVersion } from '../types';
import {
  MODEL_THREAD_ROLE,
  modelThreadEntry,
  transferList,
  type ModelThreadOptions,
  type ModelThreadReady,
  type ModelThreadReply,
  type ModelThreadRequest,
} from './model-thread';

export interface ModelRunnerOptions {
  /** Number of threads ONNX Runtime uses inside one operator, or its own default when unset. */
  intraOpThreads?: number;
  /**
   * Execution providers for every model, in order of preference, e.g. `['cuda', 'cpu']`, set
   * when the worker was started with its own list. It wins over a model's registered default.
   */
  executionProviders?: string[];
  /** Execution providers for a model that names none when the worker sets none; `['cpu']` by default. */
  hostExecutionProviders?: string[];
}

export interface LoadResult {
  /** Time the model thread spent creating the session in ms, or 0 when cached. */
  loadMs: number;
  cached: boolean;
}

export interface RunResult {
  /** The model's first output. */
  data: Float32Array;
  dims: number[];
  /** Time spent in `session.run()` on the model thread, in ms. */
  inferenceMs: number;
}

/** Raised when a model artifact's bytes do not hash to the sha256 stored at registration. */
export class ModelChecksumMismatch extends Error {
  override readonly name = 'ModelChecksumMismatch';

  constructor(
    readonly model: string,
    readonly expectedSha256: string,
    readonly actualSha256: string,
  ) {
    super(
      `checksum mismatch for model ${model}: expected sha256 ${expectedSha256}, got ${actualSha256}. ` +
        'The artifact was changed after registration; register the new file under a new version.',
    );
  }
}

/** Returns the version of the installed onnxruntime-node package, e.g. `1.31.1`. */
export function ortVersion(): string {
  // Required lazily so that importing this module does not load the native addon.
  const ort = require('onnxruntime-node') as typeof Ort;
  return ort.env.versions.node ?? ort.env.versions.common;
}

interface PendingCall {
  resolve(reply: ModelThreadReply): void;
  reject(error: Error): void;
}

/** One started model thread and the state that dies with it. */
interface ThreadHandle {
  worker: Worker;
  ready: Promise<void>;
  pending: Map<number, PendingCall>;
  /** sha256 of the models whose sessions exist in this thread, with the providers each was created with. */
  loaded: Map<string, string[]>;
  /** Loads in flight by sha256, so concurrent loads of one model send its bytes once. */
  loading: Map<string, Promise<number>>;
  /** True once the thread has posted its ready message. */
  started: boolean;
  closing: boolean;
}

/**
 * Owns one model thread and the sessions cached in it by model sha256. When the thread dies,
 * pending calls reject, the cache is cleared, and the next call starts a new thread, so
 * callers must load their model again (`has()` turns false).
 */
export class ModelRunner {
  private thread: ThreadHandle | null = null;
  private nextId = 1;
  private closed = false;
  private sessionsCreated = 0;

  /** Sessions created since start, counting again after a thread restart; a cache hit adds none. */
  get modelLoads(): number {
    return this.sessionsCreated;
  }

  private constructor(private readonly options: ModelRunnerOptions) {}

  /** Execution providers for a model without a registered default, in order of preference. */
  get executionProviders(): string[] {
    return this.options.executionProviders ?? this.options.hostExecutionProviders ?? ['cpu'];
  }

  /** Returns the execution providers `model`'s session is created with, in order of preference. */
  executionProvidersFor(model: Pick<ModelVersion, 'executionProviders'>): string[] {
    return this.options.executionProviders ?? model.executionProviders ?? this.executionProviders;
  }

  /** Starts the model thread and resolves once onnxruntime-node has loaded in it. */
  static async start(options: ModelRunnerOptions = {}): Promise<ModelRunner> {
    const runner = new ModelRunner(options);
    await runner.ensureThread();
    return runner;
  }

  /**
   * Verifies the artifact's sha256 against the registry entry and creates its session in the
   * model thread, unless a session for that sha256 already exists there.
   */
  async load(model: ModelVersion, bytes: Buffer): Promise<LoadResult> {
    const expected = model.sha256.toLowerCase();
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== expected) {
      throw new ModelChecksumMismatch(`${model.name}@${model.version}`, expected, actual);
    }

    const thread = await this.ensureThread();
    if (thread.loaded.has(expected)) {
      return { loadMs: 0, cached: true };
    }
    const executionProviders = this.executionProvidersFor(model);
    const inFlight = thread.loading.get(expected);
    if (inFlight !== undefined) {
      await inFlight;
      return { loadMs: 0, cached: true };
    }

    // A Buffer often views a shared pool, so the thread gets a copy that is safe to transfer.
    const copy = new Uint8Array(bytes);
    const request: ModelThreadRequest = { id: 0, type: 'load', sha256: expected, bytes: copy, executionProviders };
    const loading = this.call(thread, request, [copy.buffer]).then((reply) => {
      if (!reply.ok || reply.type !== 'load') {
        throw new Error(`model thread sent an unexpected reply to load for model ${expected}`);
      }
      return reply.loadMs;
    });
    thread.loading.set(expected, loading);
    try {
      const loadMs = await loading;
      thread.loaded.set(expected, executionProviders);
      this.sessionsCreated += 1;
      return { loadMs, cached: false };
    } finally {
      thread.loading.delete(expected);
    }
  }

  /**
   * Returns the providers the session for this sha256 was created with, or null when none is
   * loaded. Sessions are cached by sha256, so the same bytes registered twice with different
   * defaults share the first session. NOTE: the second registration's providers are then not
   * applied; lineage records the session's own, from here.
   */
  sessionProviders(sha256: string): string[] | null {
    return this.thread?.loaded.get(sha256.toLowerCase()) ?? null;
  }

  /** Returns true when a session for this sha256 exists in the current model thread. */
  has(sha256: string): boolean {
    return this.thread?.loaded.has(sha256.toLowerCase()) ?? false;
  }

  /**
   * Runs a loaded model with `tensor` as its first input and returns its first output, which
   * must be float32. The tensor's buffer is transferred to the model thread, so the caller's
   * array is empty (detached) afterwards, unless it is a view into a larger or shared buffer,
   * which is copied instead.
   */
  async run(sha256: string, tensor: Float32Array, dims: number[]): Promise<RunResult> {
    const elements = dims.reduce((product, dim) => product * dim, 1);
    if (elements !== tensor.length) {
      throw new RangeError(`tensor has ${tensor.length} elements but dims [${dims.join(', ')}] need ${elements}`);
    }

    const key = sha256.toLowerCase();
    const thread = await this.ensureThread();
    if (!thread.loaded.has(key)) {
      throw new Error(
        `model ${key} is not loaded in the model thread; call load() first ` +
          '(a restarted model thread has no sessions)',
      );
    }

    const reply = await this.call(thread, { id: 0, type: 'run', sha256: key, data: tensor, dims }, transferList(tensor));
    if (!reply.ok || reply.type !== 'run') {
      throw new Error(`model thread sent an unexpected reply to run for model ${key}`);
    }
    return { data: reply.data, dims: reply.dims, inferenceMs: reply.inferenceMs };
  }

  /** Terminates the model thread; pending calls reject and later calls throw. */
  async close(): Promise<void> {
    this.closed = true;
    const thread = this.thread;
    if (thread === null) {
      return;
    }
    thread.closing = true;
    await thread.worker.terminate();
  }

  private async ensureThread(): Promise<ThreadHandle> {
    if (this.closed) {
      throw new Error('ModelRunner is closed; start a new one with ModelRunner.start()');
    }
    if (this.thread === null) {
      this.thread = this.spawnThread();
    }
    const thread = this.thread;
    await thread.ready;
    return thread;
  }

  private spawnThread(): ThreadHandle {
    const entry = modelThreadEntry();
    const workerData: ModelThreadOptions = { role: MODEL_THREAD_ROLE, intraOpThreads: this.options.intraOpThreads };
    const worker = new Worker(entry.file, { execArgv: entry.execArgv, workerData });

    let markReady!: () => void;
    let failStart!: (error: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failStart = reject;
    });
    // A start failure rejects every call that awaits `ready`. This handler only keeps Node
    // from reporting the rejection as unhandled before any call awaits it.
    ready.catch(() => undefined);

    const thread: ThreadHandle = {
      worker,
      ready,
      pending: new Map(),
      loaded: new Map(),
      loading: new Map(),
      started: false,
      closing: false,
    };

    let threadError: Error | undefined;
    worker.on('message', (message: ModelThreadReply | ModelThreadReady) => {
      if ('type' in message && message.type === 'ready') {
        thread.started = true;
        this.updateRef(thread);
        markReady();
        return;
      }
      const reply = message as ModelThreadReply;
      const call = thread.pending.get(reply.id);
      if (call === undefined) {
        return;
      }
      thread.pending.delete(reply.id);
      this.updateRef(thread);
      call.resolve(reply);
    });
    worker.on('error', (error: Error) => {
      threadError = error;
    });
    worker.on('exit', (code: number) => {
      const reason = thread.closing
        ? 'ModelRunner was closed'
        : `model thread exited with code ${code}${threadError ? `: ${threadError.message}` : ''}`;
      const error = new Error(reason);
      failStart(error);
      for (const call of thread.pending.values()) {
        call.reject(error);
      }
      thread.pending.clear();
      thread.loaded.clear();
      if (this.thread === thread) {
        this.thread = null;
      }
    });

    this.updateRef(thread);
    return thread;
  }

  /** Sends one request under a fresh id and resolves with the thread's successful reply. */
  private call(thread: ThreadHandle, request: ModelThreadRequest, transfer: ArrayBuffer[]): Promise<ModelThreadReply> {
    const id = this.nextId++;
    return new Promise<ModelThreadReply>((resolve, reject) => {
      thread.pending.set(id, {
        resolve: (reply) => {
          if (reply.ok) {
            resolve(reply);
            return;
          }
          const error = new Error(reply.error.message);
          error.name = reply.error.name;
          reject(error);
        },
        reject,
      });
      this.updateRef(thread);
      try {
        thread.worker.postMessage({ ...request, id }, transfer);
      } catch (err) {
        thread.pending.delete(id);
        this.updateRef(thread);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /**
   * Keeps the process alive only while the thread starts or calls are pending, so that a
   * runner that was never closed does not stop Node from exiting.
   */
  private updateRef(thread: ThreadHandle): void {
    if (!thread.started || thread.pending.size > 0) {
      thread.worker.ref();
    } else {
      thread.worker.unref();
    }
  }
}
