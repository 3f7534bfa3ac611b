/**
 * Settings of the SkyNewt stack, read from CDK context in one place (`-c key=value` on the
 * command line, or the `context` object of cdk.json). Values from the command line arrive as
 * strings, so lists accept a JSON array or a comma-separated string.
 *
 * Nothing here is looked up in an AWS account, so `cdk synth` works offline.
 */
import type { Node } from 'constructs';

export type TemporalMode = 'cloud' | 'self-hosted';
export type ObjectLockMode = 'governance' | 'compliance';

/** The Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04), x86_64: NVIDIA driver, CUDA 12 and the AWS CLI. */
export const DEFAULT_GPU_AMI_SSM_PARAMETER =
  '/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id';

export const DEFAULT_GPU_INSTANCE_TYPES = ['g5.xlarge', 'g6.xlarge', 'g4dn.xlarge'];

export interface TemporalSettings {
  mode: TemporalMode;
  /** Frontend `host:port`, e.g. `ns.acct.tmprl.cloud:7233`. Context `temporalAddress`. */
  address: string;
  /** Context `temporalNamespace`. Default: `ns.acct` from a Temporal Cloud address, else `default`. */
  namespace: string;
  /**
   * Complete ARN of a Secrets Manager secret whose JSON has `tlsCert` and `tlsKey` (PEM).
   * Context `temporalSecretArn`. Without it, cloud mode creates an empty secret to fill in.
   */
  secretArn?: string;
}

export interface ImportedVpcSettings {
  vpcId: string;
  subnetIds: string[];
  /** One zone per subnet, in the same order. */
  availabilityZones: string[];
  /** Whether the subnets route to an internet gateway, so tasks and instances need public IPs. */
  subnetsArePublic: boolean;
}

export interface AuditSettings {
  enabled: boolean;
  mode: ObjectLockMode;
  retentionDays: number;
}

export interface SkyNewtInfraConfig {
  account: string;
  region: string;
  stackName: string;
  temporal: TemporalSettings;
  /** Models the GPU workers load before polling, `name` or `name@version`. Context `prewarmModels`. */
  prewarmModels: string[];
  /** Context `gpuInstanceTypes`; at least two, so spot has several capacity pools. */
  gpuInstanceTypes: string[];
  /** Initial fleet size. The fleet controller changes it with ec2:ModifyFleet. Context `fleetTargetCapacity`, default 0. */
  fleetTargetCapacity: number;
  /** Zones of the VPC the stack creates. Context `availabilityZones`; default: the first `zoneCount` zones CloudFormation's Fn::GetAZs returns. */
  availabilityZones?: string[];
  /** Number of zones used when `availabilityZones` is not given. Context `zoneCount`, default 3. */
  zoneCount: number;
  /** An existing VPC (contexts `vpcId`, `subnetIds`, `subnetAvailabilityZones`, `subnetsArePublic`). */
  importedVpc?: ImportedVpcSettings;
  /** Image of the orchestrator container. Context `orchestratorImage`; also a stack parameter. */
  orchestratorImage?: string;
  /** Key, in the artifacts bucket, of the tarball of this repository the GPU hosts install. Context `workerBundleKey`. */
  workerBundleKey: string;
  /** Node.js release the GPU hosts download from nodejs.org. Context `nodeVersion`. */
  nodeVersion: string;
  /** Shards one GPU worker runs at once. Context `shardConcurrency`, default 1. */
  shardConcurrency: number;
  audit: AuditSettings;
}

export function readInfraConfig(node: Node): SkyNewtInfraConfig {
  const region = readString(node, 'region', 'us-east-1');
  const importedVpc = readImportedVpc(node);
  const config: SkyNewtInfraConfig = {
    account: readString(node, 'account', '111111111111'),
    region,
    stackName: readString(node, 'stackName', 'SkyNewt'),
    temporal: readTemporal(node),
    prewarmModels: readList(node, 'prewarmModels', []),
    gpuInstanceTypes: readList(node, 'gpuInstanceTypes', DEFAULT_GPU_INSTANCE_TYPES),
    fleetTargetCapacity: readInteger(node, 'fleetTargetCapacity', 0, 0),
    availabilityZones: optionalList(node, 'availabilityZones'),
    zoneCount: readInteger(node, 'zoneCount', 3, 1),
    importedVpc,
    orchestratorImage: optionalString(node, 'orchestratorImage'),
    workerBundleKey: readString(node, 'workerBundleKey', 'releases/skynewt.tar.gz'),
    nodeVersion: readString(node, 'nodeVersion', '20.20.2'),
    shardConcurrency: readInteger(node, 'shardConcurrency', 1, 1),
    audit: {
      enabled: readBoolean(node, 'auditBucket', false),
      mode: readChoice(node, 'auditLockMode', ['governance', 'compliance'] as const, 'governance'),
      retentionDays: readInteger(node, 'auditRetentionDays', 365, 1),
    },
  };
  validate(config);
  return config;
}

function readTemporal(node: Node): TemporalSettings {
  const mode = readChoice(node, 'temporalMode', ['cloud', 'self-hosted'] as const, 'self-hosted');
  const address = readString(node, 'temporalAddress', 'temporal.example.com:7233');
  if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(address)) {
    throw new Error(`Invalid context temporalAddress ${JSON.stringify(address)}: expected host:port, e.g. ns.acct.tmprl.cloud:7233.`);
  }
  const cloudNamespace = /^([^.]+\.[^.]+)\.tmprl\.cloud:\d+$/.exec(address)?.[1];
  if (mode === 'cloud' && cloudNamespace === undefined) {
    throw new Error(
      `Invalid context temporalAddress ${JSON.stringify(address)} for temporalMode cloud: ` +
        'expected the namespace endpoint <namespace>.<account>.tmprl.cloud:7233.',
    );
  }
  const secretArn = optionalString(node, 'temporalSecretArn');
  if (secretArn !== undefined && !/^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/.test(secretArn)) {
    throw new Error(
      `Invalid context temporalSecretArn ${JSON.stringify(secretArn)}: expected the complete secret ARN, ` +
        'which ends with a hyphen and six random characters (aws secretsmanager describe-secret prints it).',
    );
  }
  return {
    mode,
    address,
    namespace: optionalString(node, 'temporalNamespace') ?? (mode === 'cloud' ? (cloudNamespace as string) : 'default'),
    secretArn,
  };
}

function readImportedVpc(node: Node): ImportedVpcSettings | undefined {
  const vpcId = optionalString(node, 'vpcId');
  if (vpcId === undefined) return undefined;
  const subnetIds = readList(node, 'subnetIds', []);
  const availabilityZones = readList(node, 'subnetAvailabilityZones', []);
  if (subnetIds.length === 0 || subnetIds.length !== availabilityZones.length) {
    throw new Error(
      `Context vpcId ${vpcId} needs subnetIds and subnetAvailabilityZones of equal, non-zero length ` +
        `(got ${subnetIds.length} subnets and ${availabilityZones.length} zones).`,
    );
  }
  if (!/^vpc-[0-9a-f]+$/.test(vpcId)) {
    throw new Error(`Invalid context vpcId ${JSON.stringify(vpcId)}: expected an id such as vpc-0123456789abcdef0.`);
  }
  for (const subnetId of subnetIds) {
    if (!/^subnet-[0-9a-f]+$/.test(subnetId)) {
      throw new Error(`Invalid subnet ${JSON.stringify(subnetId)} in context subnetIds: expected an id such as subnet-0123456789abcdef0.`);
    }
  }
  return { vpcId, subnetIds, availabilityZones, subnetsArePublic: readBoolean(node, 'subnetsArePublic', true) };
}

function validate(config: SkyNewtInfraConfig): void {
  if (!/^\d{12}$/.test(config.account)) {
    throw new Error(`Invalid context account ${JSON.stringify(config.account)}: expected a 12-digit AWS account id.`);
  }
  if (config.gpuInstanceTypes.length < 2) {
    throw new Error(
      `Context gpuInstanceTypes lists ${config.gpuInstanceTypes.length} type(s): give at least two, ` +
        'so the spot fleet can move to another capacity pool when one runs dry.',
    );
  }
  for (const type of config.gpuInstanceTypes) {
    if (!/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(type)) {
      throw new Error(`Invalid instance type ${JSON.stringify(type)} in context gpuInstanceTypes: expected e.g. g5.xlarge.`);
    }
  }
  for (const model of config.prewarmModels) {
    if (!/^[A-Za-z0-9._-]+(@[A-Za-z0-9._-]+)?$/.test(model)) {
      throw new Error(`Invalid model ${JSON.stringify(model)} in context prewarmModels: expected name or name@version.`);
    }
  }
  if (!/^\d+\.\d+\.\d+$/.test(config.nodeVersion)) {
    throw new Error(`Invalid context nodeVersion ${JSON.stringify(config.nodeVersion)}: expected a release such as 20.20.2.`);
  }
}

function optionalString(node: Node, key: string): string | undefined {
  const value: unknown = node.tryGetContext(key);
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new Error(`Invalid context ${key}: expected a string, got ${JSON.stringify(value)}.`);
  }
  return String(value).trim();
}

function readString(node: Node, key: string, fallback: string): string {
  return optionalString(node, key) ?? fallback;
}

function readList(node: Node, key: string, fallback: string[]): string[] {
  return optionalList(node, key) ?? fallback;
}

function optionalList(node: Node, key: string): string[] | undefined {
  const value: unknown = node.tryGetContext(key);
  if (value === undefined || value === null || value === '') return undefined;
  let items: unknown = value;
  if (typeof value === 'string') {
    items = value.trim().startsWith('[') ? JSON.parse(value) : value.split(',');
  }
  if (!Array.isArray(items) || !items.every((item) => typeof item === 'string')) {
    throw new Error(`Invalid context ${key}: expected a list of strings or a comma-separated string, got ${JSON.stringify(value)}.`);
  }
  return items.map((item) => item.trim()).filter(Boolean);
}

function readInteger(node: Node, key: string, fallback: number, minimum: number): number {
  const raw = optionalString(node, key);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < minimum) {
    throw new Error(`Invalid context ${key} ${JSON.stringify(raw)}: expected a whole number of ${minimum} or more.`);
  }
  return value;
}

function readBoolean(node: Node, key: string, fallback: boolean): boolean {
  const value: unknown = node.tryGetContext(key);
  if (value === undefined || value === null || value === '') return fallback;
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new Error(`Invalid context ${key} ${JSON.stringify(value)}: expected true or false.`);
}

function readChoice<T extends string>(node: Node, key: string, choices: readonly T[], fallback: T): T {
  const value = optionalString(node, key);
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) {
    throw new Error(`Invalid context ${key} ${JSON.stringify(value)}: expected one of ${choices.join(', ')}.`);
  }
  return value as T;
}
