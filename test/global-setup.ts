/**
 * Starts the servers the tests share, on 127.0.0.1 and free ports: a Temporal dev server
 * (in memory, with SkyNewt's search attributes) and moto for S3, DynamoDB and EC2. It also bundles
 * the workflows once, so each test's worker starts in well under a second.
 */
import { mkdtempSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { startDevServer } from '../infra/local/dev-server';
import { startMoto } from '../infra/local/moto';
import { findFreePort } from '../infra/local/ports';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    motoEndpoint: string;
    workflowBundlePath: string;
    samplesDir: string;
    scratchDir: string;
  }
}

const REPO_ROOT = path.resolve(__dirname, '..');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Nothing in a test may fall back to real AWS or the instance metadata service.
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_ACCESS_KEY_ID = 'test';
  process.env.AWS_SECRET_ACCESS_KEY = 'test';
  process.env.AWS_REGION = 'us-east-1';
  delete process.env.AWS_PROFILE;

  const samplesDir = process.env.SKYNEWT_SAMPLE_IMAGES ?? path.join(REPO_ROOT, '.skynewt', 'samples');
  if (!existsSync(samplesDir) || readdirSync(samplesDir).length === 0) {
    throw new Error(`No sample images in ${samplesDir}; run: node infra/local/bootstrap.js`);
  }

  const scratchDir = mkdtempSync(path.join(os.tmpdir(), 'skynewt-test-'));
  const server = await startDevServer({
    grpcPort: await findFreePort(),
    uiPort: await findFreePort(),
    headless: true,
    logFile: path.join(scratchDir, 'temporal.log'),
  });
  let moto;
  let workflowBundlePath;
  try {
    moto = await startMoto({ logFile: path.join(scratchDir, 'moto.log') });
    process.env.AWS_ENDPOINT_URL = moto.endpoint;
    process.env.SKYNEWT_MOTO_ENDPOINT = moto.endpoint;
    const { code } = await bundleWorkflowCode({ workflowsPath: path.join(REPO_ROOT, 'workflows', 'index.ts') });
    workflowBundlePath = path.join(scratchDir, 'workflow-bundle.js');
    writeFileSync(workflowBundlePath, code);
  } catch (err) {
    // Vitest runs no teardown when setup throws, so stop what already started.
    await moto?.stop();
    await server.stop();
    throw err;
  }

  project.provide('temporalAddress', server.address);
  project.provide('motoEndpoint', moto.endpoint);
  project.provide('workflowBundlePath', workflowBundlePath);
  project.provide('samplesDir', samplesDir);
  project.provide('scratchDir', scratchDir);

  return async () => {
    await moto.stop();
    await server.stop();
  };
}
