/**
 * The SkyNewt stack: storage, the model registry table, roles, the Temporal connection
 * settings, the GPU spot fleet and the orchestrator service, wired together from one config.
 */
import { CfnOutput, Fn, Stack, Tags, type StackProps } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import type { SkyNewtInfraConfig } from './config';
import { GpuFleet } from './gpu-fleet';
import { SkyNewtRoles } from './iam';
import { Network } from './network';
import { OrchestratorService } from './orchestrator-service';
import { RegistryTable } from './registry-table';
import { ARTIFACT_PREFIX, RESULTS_PREFIX, Storage } from './storage';
import { TemporalAccess } from './temporal-access';
import { workerUserData } from './worker-user-data';

export interface SkyNewtStackProps extends StackProps {
  config: SkyNewtInfraConfig;
}

export class SkyNewtStack extends Stack {
  readonly storage: Storage;
  readonly registry: RegistryTable;
  readonly roles: SkyNewtRoles;
  readonly temporal: TemporalAccess;
  readonly gpuFleet: GpuFleet;
  readonly orchestrator: OrchestratorService;
  private readonly zones: string[];

  constructor(scope: Construct, id: string, props: SkyNewtStackProps) {
    super(scope, id, props);
    const { config } = props;
    this.zones =
      config.importedVpc?.availabilityZones ??
      config.availabilityZones ??
      Array.from({ length: config.zoneCount }, (_, index) => Fn.select(index, Fn.getAzs()));
    Tags.of(this).add('project', 'skynewt');

    const network = new Network(this, 'Network', { importedVpc: config.importedVpc });
    this.storage = new Storage(this, 'Storage', { audit: config.audit });
    this.registry = new RegistryTable(this, 'Registry');
    this.temporal = new TemporalAccess(this, 'Temporal', config.temporal);
    this.roles = new SkyNewtRoles(this, 'Roles', {
      storage: this.storage,
      table: this.registry.table,
      tlsSecret: this.temporal.tlsSecret,
      workerBundleKey: config.workerBundleKey,
    });

    const temporalPort = Number(config.temporal.address.split(':')[1]);
    const artifactUri = `s3://${this.storage.artifacts.bucketName}/${ARTIFACT_PREFIX}`;
    const sharedEnvironment: Record<string, string> = {
      AWS_REGION: this.region,
      SKYNEWT_TEMPORAL_ADDRESS: config.temporal.address,
      SKYNEWT_NAMESPACE: config.temporal.namespace,
      SKYNEWT_REGISTRY_TABLE: this.registry.table.tableName,
      SKYNEWT_ARTIFACT_URI: artifactUri,
      SKYNEWT_RESULTS: `s3://${this.storage.results.bucketName}/${RESULTS_PREFIX}`,
    };

    this.gpuFleet = new GpuFleet(this, 'GpuFleet', {
      vpc: network.vpc,
      subnets: network.subnets,
      instanceTypes: config.gpuInstanceTypes,
      targetCapacity: config.fleetTargetCapacity,
      instanceProfile: this.roles.workerInstanceProfile,
      temporalPort,
      userData: workerUserData({
        region: this.region,
        nodeVersion: config.nodeVersion,
        bundleUri: `s3://${this.storage.artifacts.bucketName}/${config.workerBundleKey}`,
        tlsSecretArn: this.temporal.tlsSecret?.secretArn,
        environment: {
          ...sharedEnvironment,
          SKYNEWT_EC2: 'true',
          SKYNEWT_HOME: '/var/lib/skynewt',
          SKYNEWT_MODELS: config.prewarmModels.join(','),
          SKYNEWT_SHARD_CONCURRENCY: String(config.shardConcurrency),
          // The user data installs onnxruntime-node's CUDA 12 provider; CPU runs what CUDA lacks.
          SKYNEWT_EXECUTION_PROVIDER: 'cuda,cpu',
        },
      }),
    });
    this.roles.allowFleetControl(this.gpuFleet.fleet.ref);

    this.orchestrator = new OrchestratorService(this, 'Orchestrator', {
      vpc: network.vpc,
      subnets: network.subnets,
      assignPublicIp: network.assignPublicIp,
      taskRole: this.roles.orchestratorRole,
      temporal: this.temporal,
      image: config.orchestratorImage,
      temporalPort,
      environment: { ...sharedEnvironment, SKYNEWT_HOME: '/tmp/skynewt' },
    });

    this.addOutputs();
  }

  /**
   * Returns the zones from context, else Fn::GetAZs resolved at deploy time. Stack's own getter
   * looks up the account's zones when the stack has an explicit account and region, which would
   * make synth need AWS credentials and the network.
   */
  override get availabilityZones(): string[] {
    return this.zones;
  }

  private addOutputs(): void {
    const output = (id: string, value: string, description: string) => new CfnOutput(this, id, { value, description });
    output('InputsBucketName', this.storage.inputs.bucketName, 'Bucket for batch inputs (skynewt run s3://<bucket>/<prefix>).');
    output('ResultsBucketName', this.storage.results.bucketName, 'Bucket for batch outputs and manifests.');
    output('ArtifactsBucketName', this.storage.artifacts.bucketName, 'Bucket for model artifacts and the worker bundle.');
    output('ArtifactUri', `s3://${this.storage.artifacts.bucketName}/${ARTIFACT_PREFIX}`, 'Value for SKYNEWT_ARTIFACT_URI.');
    if (this.storage.audit) {
      output('AuditBucketName', this.storage.audit.bucketName, 'Object Lock bucket for exported workflow histories.');
    }
    output('RegistryTableName', this.registry.table.tableName, 'Value for SKYNEWT_REGISTRY_TABLE.');
    output('GpuFleetId', this.gpuFleet.fleet.ref, 'EC2 Fleet of the GPU workers; resize it with aws ec2 modify-fleet.');
    output('LaunchTemplateId', this.gpuFleet.launchTemplate.launchTemplateId ?? '', 'Launch template of the GPU workers.');
    output('OrchestratorRoleArn', this.roles.orchestratorRole.roleArn, 'Task role of the orchestrator service.');
    output('WorkerRoleArn', this.roles.workerRole.roleArn, 'Role of the GPU worker instances.');
    output('WorkerInstanceProfileArn', this.roles.workerInstanceProfile.instanceProfileArn, 'Instance profile of the GPU workers.');
    if (this.temporal.tlsSecret) {
      output('TemporalTlsSecretArn', this.temporal.tlsSecret.secretArn, 'Secret with the Temporal mTLS client certificate and key.');
    }
    output('OrchestratorServiceName', this.orchestrator.service.serviceName, 'ECS service of the orchestrator worker.');
  }
}
