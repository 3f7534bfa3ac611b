/**
 * onnxruntime execution providers: the names SkyNewt accepts, and the list a worker uses when
 * neither the worker nor the model names one. A worker's own list wins over the model's
 * default, which wins over what the host offers.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';

export const EXECUTION_PROVIDERS = ['cpu', 'cuda', 'tensorrt'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

/**
 * Parses a comma-separated list such as `cuda,cpu`. `source` names where the text came from
 * (a flag or a variable), so the error message names what to fix.
 */
export function parseExecutionProviders(raw: string, source: string): ExecutionProvider[] {
  const providers = raw.split(',').map((name) => name.trim().toLowerCase()).filter(Boolean);
  if (providers.length === 0) {
    throw new Error(`Invalid ${source} ${JSON.stringify(raw)}: name at least one of ${EXECUTION_PROVIDERS.join(', ')}, e.g. cuda,cpu.`);
  }
  const unknown = providers.find((name) => !(EXECUTION_PROVIDERS as readonly string[]).includes(name));
  if (unknown !== undefined) {
    throw new Error(`Invalid ${source} ${JSON.stringify(raw)}: ${unknown} is not one of ${EXECUTION_PROVIDERS.join(', ')}; list several in order of preference, e.g. cuda,cpu.`);
  }
  return providers as ExecutionProvider[];
}

/**
 * Counts the NVIDIA GPUs this process may use: those the driver lists under
 * `/proc/driver/nvidia/gpus`, or the devices named in CUDA_VISIBLE_DEVICES when it is set.
 * Returns 0 without the driver, as on every host without an NVIDIA GPU.
 */
export function visibleGpuCount(env: NodeJS.ProcessEnv = process.env, procRoot = '/proc'): number {
  let installed = 0;
  try {
    installed = readdirSync(path.join(procRoot, 'driver', 'nvidia', 'gpus')).length;
  } catch {
    return 0;
  }
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible === undefined) return installed;
  // CUDA ignores the entries from the first negative or empty one on, so "-1" or "" hides all.
  const devices = visible.split(',').map((entry) => entry.trim());
  const firstHidden = devices.findIndex((entry) => entry === '' || entry.startsWith('-'));
  return Math.min(installed, firstHidden < 0 ? devices.length : firstHidden);
}

/**
 * Returns true when onnxruntime-node's CUDA execution provider library sits next to its
 * binding, which happens only after the CUDA variant was installed (see the README).
 */
export function cudaProviderInstalled(): boolean {
  const root = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return existsSync(path.join(root, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
}

/**
 * Returns the providers a worker uses when neither it nor the model names any. On a host with a
 * visible NVIDIA GPU and the CUDA variant of onnxruntime-node, that is CUDA first and CPU for the
 * operators CUDA lacks. Everywhere else it is CPU alone.
 */
export function hostExecutionProviders(env: NodeJS.ProcessEnv = process.env): ExecutionProvider[] {
  return visibleGpuCount(env) > 0 && cudaProviderInstalled() ? ['cuda', 'cpu'] : ['cpu'];
}
