/**
 * CDK app entry: `npx cdk synth` (run in infra/cdk, or `npm run cdk:synth` at the root).
 * Every setting comes from context (see config.ts); no AWS account is contacted at synth.
 */
import { App } from 'aws-cdk-lib';
import { readInfraConfig } from './config';
import { SkyNewtStack } from './skynewt-stack';

const app = new App();
const config = readInfraConfig(app.node);
new SkyNewtStack(app, config.stackName, {
  config,
  env: { account: config.account, region: config.region },
  description: 'SkyNewt: ONNX batch inference on EC2 spot GPUs, orchestrated by Temporal.',
});
app.synth();
