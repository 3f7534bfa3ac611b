/**
 * Least-privilege roles: one for the orchestrator task, one (with an instance profile) for the GPU
 * workers. Every statement names the project's buckets, table, secret or fleet, except the EC2
 * Describe actions, which have no resource-level permissions and so need `Resource: "*"`.
 *
 * The S3 statements follow what activities/storage/s3-store.ts calls: GetObject (also for
 * HeadObject), PutObject, DeleteObject and ListObjectsV2 (s3:ListBucket). s3:ListBucket is granted
 * on every bucket a role reads, because without it S3 returns 403 instead of 404 for a missing key.
 */
import { Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ARTIFACT_PREFIX, type Storage } from './storage';

/**
 * Actions that AWS does not let a policy scope to a resource. ecr:GetAuthorizationToken comes
 * from the ECR pull grant of the orchestrator's task execution role.
 */
export const UNSCOPED_ACTIONS = ['ec2:DescribeSpotPriceHistory', 'ec2:DescribeFleets', 'ecr:GetAuthorizationToken'];

export interface SkyNewtRolesProps {
  storage: Storage;
  table: dynamodb.ITable;
  /** The Temporal mTLS secret; the GPU workers read it at start. */
  tlsSecret?: secretsmanager.ISecret;
  /** Key of the worker bundle in the artifacts bucket, read by the GPU hosts at boot. */
  workerBundleKey: string;
}

export class SkyNewtRoles extends Construct {
  readonly orchestratorRole: iam.Role;
  readonly workerRole: iam.Role;
  readonly workerInstanceProfile: iam.InstanceProfile;

  constructor(scope: Construct, id: string, props: SkyNewtRolesProps) {
    super(scope, id);
    const { inputs, results, artifacts, audit } = props.storage;

    this.orchestratorRole = new iam.Role(this, 'OrchestratorRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'SkyNewt orchestrator worker: lists inputs, resolves models, writes manifests, scales the GPU fleet.',
    });
    // listInputs reads the input prefix or manifest file and writes the listing under the results.
    readObjects(this.orchestratorRole, inputs, '*');
    // writeManifest reads shard results and deletes the checkpoint parts it has assembled.
    readWriteObjects(this.orchestratorRole, results, { delete: true });
    // resolveModel checks the artifact's sha256 before any shard runs.
    readObjects(this.orchestratorRole, artifacts, `${ARTIFACT_PREFIX}/*`);
    readRegistry(this.orchestratorRole, props.table);
    if (audit) {
      // Exported workflow histories: write only, and Object Lock keeps them for the retention period.
      this.orchestratorRole.addToPolicy(
        new iam.PolicyStatement({ sid: 'WriteAuditObjects', actions: ['s3:PutObject'], resources: [audit.arnForObjects('*')] }),
      );
    }

    this.workerRole = new iam.Role(this, 'WorkerRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'SkyNewt GPU inference worker: reads images and models, writes shard results.',
    });
    readObjects(this.workerRole, inputs, '*');
    // Shards read their listing and checkpoint parts and write parts, JSONL, masks and results.
    readWriteObjects(this.workerRole, results, { delete: false });
    readObjects(this.workerRole, artifacts, `${ARTIFACT_PREFIX}/*`, props.workerBundleKey);
    readRegistry(this.workerRole, props.table);
    if (props.tlsSecret) {
      this.workerRole.addToPolicy(
        new iam.PolicyStatement({
          sid: 'ReadTemporalTlsSecret',
          actions: ['secretsmanager:GetSecretValue'],
          resources: [props.tlsSecret.secretArn],
        }),
      );
    }
    // The cost of an attempt uses the spot price of its instance type and zone.
    // DescribeSpotPriceHistory has no resource-level permissions, so AWS requires Resource "*".
    this.workerRole.addToPolicy(
      new iam.PolicyStatement({ sid: 'ReadSpotPrices', actions: ['ec2:DescribeSpotPriceHistory'], resources: ['*'] }),
    );

    this.workerInstanceProfile = new iam.InstanceProfile(this, 'WorkerInstanceProfile', { role: this.workerRole });
  }

  /** Lets the orchestrator's fleet activities read and resize the GPU fleet (ModifyFleet, DescribeFleets). */
  allowFleetControl(fleetId: string): void {
    const stack = Stack.of(this);
    const fleetArn = stack.formatArn({ service: 'ec2', resource: 'fleet', resourceName: fleetId });
    this.orchestratorRole.addToPolicy(new iam.PolicyStatement({ sid: 'ResizeGpuFleet', actions: ['ec2:ModifyFleet'], resources: [fleetArn] }));
    // DescribeFleets has no resource-level permissions, so AWS requires Resource "*". It only reads.
    this.orchestratorRole.addToPolicy(
      new iam.PolicyStatement({ sid: 'DescribeGpuFleet', actions: ['ec2:DescribeFleets'], resources: ['*'] }),
    );
  }
}

/** Grants GetObject on the given key patterns of a bucket, and ListBucket on the bucket. */
function readObjects(role: iam.Role, bucket: s3.IBucket, ...keyPatterns: string[]): void {
  role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [bucket.bucketArn] }));
  role.addToPolicy(
    new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: keyPatterns.map((pattern) => bucket.arnForObjects(pattern)) }),
  );
}

function readWriteObjects(role: iam.Role, bucket: s3.IBucket, options: { delete: boolean }): void {
  role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [bucket.bucketArn] }));
  const actions = ['s3:GetObject', 's3:PutObject', ...(options.delete ? ['s3:DeleteObject'] : [])];
  role.addToPolicy(new iam.PolicyStatement({ actions, resources: [bucket.arnForObjects('*')] }));
}

/** Grants the calls of DynamoRegistry.get and list(name). Scan, which lists all models, stays with operators. */
function readRegistry(role: iam.Role, table: dynamodb.ITable): void {
  role.addToPolicy(new iam.PolicyStatement({ actions: ['dynamodb:GetItem', 'dynamodb:Query'], resources: [table.tableArn] }));
}
