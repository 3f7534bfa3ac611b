/**
 * Plans the inference workers one host runs: one per visible GPU by default, or any number on
 * a CPU host, with the CPU cores split between them as onnxruntime intra-op threads.
 */

export interface HostPlanOptions {
  /** Inference workers to run; by default one per GPU, or 1 on a host without GPUs. */
  workers?: number;
  /** Visible NVIDIA GPUs, from `visibleGpuCount()`. */
  gpus: number;
  /** CPU cores, from `os.availableParallelism()`. */
  cores: number;
  /** The environment the workers inherit; settings it already has are kept. */
  env: NodeJS.ProcessEnv;
}

export interface PlannedWorker {
  /** `inference` for a single worker, `inference-1` ... `inference-N` for several. */
  name: string;
  /** Variables added to the inherited environment of this worker. */
  env: Record<string, string>;
}

/**
 * Returns each worker's name and settings. CUDA_VISIBLE_DEVICES gives worker i one GPU, i modulo
 * the GPU count (the i-th entry of the inherited list when one is set). Each worker gets
 * floor(cores / workers) intra-op threads, at least 1, unless SKYNEWT_INTRA_OP_THREADS is set, and
 * SKYNEWT_WORKERS_ON_HOST so that each is charged its share of the host's price.
 */
export function planInferenceWorkers(options: HostPlanOptions): PlannedWorker[] {
  const count = options.workers ?? Math.max(1, options.gpus);
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`Invalid number of inference workers ${count}: expected a whole number of 1 or more.`);
  }
  const inherited = options.env.CUDA_VISIBLE_DEVICES?.split(',').map((entry) => entry.trim());
  const devices = Array.from({ length: options.gpus }, (_, i) => inherited?.[i] ?? String(i));
  return Array.from({ length: count }, (_, i) => {
    const env: Record<string, string> = { SKYNEWT_WORKERS_ON_HOST: String(count) };
    if (!options.env.SKYNEWT_INTRA_OP_THREADS) env.SKYNEWT_INTRA_OP_THREADS = String(Math.max(1, Math.floor(options.cores / count)));
    if (devices.length > 0) env.CUDA_VISIBLE_DEVICES = devices[i % devices.length];
    return { name: count === 1 ? 'inference' : `inference-${i + 1}`, env };
  });
}
