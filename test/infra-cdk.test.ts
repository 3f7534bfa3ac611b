/**
 * The CDK stack in infra/cdk, checked on its synthesized CloudFormation template (no AWS access),
 * plus one run of the CDK CLI's `cdk synth` with every network feature of the CLI switched off.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App, CfnElement } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { afterAll, describe, expect, it } from 'vitest';
import { readInfraConfig } from '../infra/cdk/config';
import { UNSCOPED_ACTIONS } from '../infra/cdk/iam';
import { SkyNewtStack } from '../infra/cdk/skynewt-stack';

const CDK_DIR = path.resolve(__dirname, '..', 'infra', 'cdk');
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:111111111111:secret:skynewt/temporal-AbCdEf';
const CLOUD_CONTEXT = { temporalMode: 'cloud', temporalAddress: 'skynewt.a1b2c.tmprl.cloud:7233' };

type Json = Record<string, any>;

// Template.fromStack writes the cloud assembly to the app's outdir, so each app gets one in a folder removed at the end.
const assemblyRoot = mkdtempSync(path.join(os.tmpdir(), 'skynewt-cdk-assembly-'));
afterAll(() => rmSync(assemblyRoot, { recursive: true, force: true }));

function synth(context: Record<string, unknown> = {}): { stack: SkyNewtStack; template: Template; json: Json } {
  const outdir = mkdtempSync(path.join(assemblyRoot, 'app-'));
  const app = new App({ outdir, context: { account: '111111111111', region: 'us-east-1', ...context } });
  const config = readInfraConfig(app.node);
  const stack = new SkyNewtStack(app, 'SkyNewt', { config, env: { account: config.account, region: config.region } });
  const template = Template.fromStack(stack);
  return { stack, template, json: template.toJSON() };
}

function resourcesOfType(json: Json, type: string): [string, Json][] {
  return Object.entries(json.Resources as Json).filter(([, resource]) => resource.Type === type);
}

/** Joins an Fn::Join (or plain string), writing each unresolved token as `{token}`. */
function joinToString(value: unknown): string {
  if (typeof value === 'string') return value;
  const join = (value as Json)['Fn::Join'];
  if (join) return (join[1] as unknown[]).map((part) => (typeof part === 'string' ? part : '{token}')).join(join[0]);
  return '{token}';
}

function userDataOf(json: Json): string {
  const [[, launchTemplate]] = resourcesOfType(json, 'AWS::EC2::LaunchTemplate');
  return joinToString(launchTemplate.Properties.LaunchTemplateData.UserData['Fn::Base64']);
}

/** Collects every Allow statement of every policy, with the roles it is attached to. */
function allowStatements(json: Json): { roles: string[]; actions: string[]; resources: unknown[] }[] {
  const statements: { roles: string[]; actions: string[]; resources: unknown[] }[] = [];
  for (const [, policy] of resourcesOfType(json, 'AWS::IAM::Policy')) {
    const roles = (policy.Properties.Roles as Json[]).map((role) => role.Ref as string);
    for (const statement of policy.Properties.PolicyDocument.Statement as Json[]) {
      if (statement.Effect !== 'Allow') continue;
      statements.push({ roles, actions: [statement.Action].flat(), resources: [statement.Resource].flat() });
    }
  }
  for (const [logicalId, role] of resourcesOfType(json, 'AWS::IAM::Role')) {
    for (const policy of (role.Properties.Policies ?? []) as Json[]) {
      for (const statement of policy.PolicyDocument.Statement as Json[]) {
        statements.push({ roles: [logicalId], actions: [statement.Action].flat(), resources: [statement.Resource].flat() });
      }
    }
  }
  return statements;
}

/** Logical id of an L1 construct, or of the L1 resource behind an L2 construct. */
function logicalId(stack: SkyNewtStack, construct: IConstruct | undefined): string {
  if (construct === undefined) throw new Error('logicalId: construct is undefined');
  const element = construct instanceof CfnElement ? construct : construct.node.defaultChild;
  if (!(element instanceof CfnElement)) throw new Error(`No CloudFormation resource behind ${construct.node.path}`);
  return stack.getLogicalId(element);
}

describe('S3 buckets', () => {
  it('encrypt, version, block public access', () => {
    const { json } = synth({ auditBucket: 'true' });
    const buckets = resourcesOfType(json, 'AWS::S3::Bucket');
    expect(buckets).toHaveLength(4);
    for (const [id, bucket] of buckets) {
      const properties = bucket.Properties;
      expect(properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, id).toBe('AES256');
      expect(properties.VersioningConfiguration, id).toEqual({ Status: 'Enabled' });
      expect(properties.PublicAccessBlockConfiguration, id).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(bucket.DeletionPolicy, id).toBe('Retain');
    }
  });

  it('deny requests without TLS', () => {
    const { json } = synth({ auditBucket: 'true' });
    const buckets = resourcesOfType(json, 'AWS::S3::Bucket').map(([id]) => id);
    const enforced = new Set<string>();
    for (const [, policy] of resourcesOfType(json, 'AWS::S3::BucketPolicy')) {
      const statements = policy.Properties.PolicyDocument.Statement as Json[];
      const denyInsecure = statements.find(
        (statement) => statement.Effect === 'Deny' && statement.Condition?.Bool?.['aws:SecureTransport'] === 'false',
      );
      expect(denyInsecure).toBeDefined();
      expect(denyInsecure!.Action).toBe('s3:*');
      enforced.add(policy.Properties.Bucket.Ref);
    }
    expect([...enforced].sort()).toEqual([...buckets].sort());
  });

  it('audit bucket absent by default', () => {
    const { json, stack } = synth();
    expect(resourcesOfType(json, 'AWS::S3::Bucket')).toHaveLength(3);
    expect(stack.storage.audit).toBeUndefined();
    expect(json.Outputs.AuditBucketName).toBeUndefined();
  });

  it('audit bucket has Object Lock in governance mode', () => {
    const { template, json } = synth({ auditBucket: 'true', auditRetentionDays: '30' });
    template.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockEnabled: true,
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'GOVERNANCE', Days: 30 } } },
    });
    expect(json.Outputs.AuditBucketName).toBeDefined();
  });

  it('audit bucket in compliance mode', () => {
    const { template } = synth({ auditBucket: true, auditLockMode: 'compliance', auditRetentionDays: 7 });
    template.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockConfiguration: { Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 7 } } },
    });
  });
});

describe('registry table', () => {
  it('matches the DynamoRegistry schema', () => {
    const { template } = synth();
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'name', KeyType: 'HASH' },
        { AttributeName: 'version', KeyType: 'RANGE' },
      ],
      AttributeDefinitions: Match.arrayWith([
        { AttributeName: 'name', AttributeType: 'S' },
        { AttributeName: 'version', AttributeType: 'S' },
      ]),
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });
  });
});

describe('IAM policies', () => {
  it('name only project resources', () => {
    const { json, stack } = synth({ ...CLOUD_CONTEXT, temporalSecretArn: SECRET_ARN, auditBucket: 'true' });
    const projectIds = [
      logicalId(stack, stack.storage.inputs),
      logicalId(stack, stack.storage.results),
      logicalId(stack, stack.storage.artifacts),
      logicalId(stack, stack.storage.audit),
      logicalId(stack, stack.registry.table),
      logicalId(stack, stack.gpuFleet.fleet),
      ...resourcesOfType(json, 'AWS::Logs::LogGroup').map(([id]) => id),
    ];
    const statements = allowStatements(json);
    expect(statements.length).toBeGreaterThan(10);

    for (const statement of statements) {
      expect(statement.actions.some((action) => action === '*' || action.endsWith(':*')), JSON.stringify(statement)).toBe(false);
      for (const resource of statement.resources) {
        if (resource === '*') {
          for (const action of statement.actions) expect(UNSCOPED_ACTIONS, JSON.stringify(statement)).toContain(action);
          continue;
        }
        const text = JSON.stringify(resource);
        const namesProjectResource = projectIds.some((id) => text.includes(`"${id}"`)) || text.includes(SECRET_ARN);
        expect(namesProjectResource, text).toBe(true);
      }
    }
  });

  it('grant Resource * only to allowed actions', () => {
    const { json, stack } = synth(CLOUD_CONTEXT);
    const workerRole = logicalId(stack, stack.roles.workerRole);
    const orchestratorRole = logicalId(stack, stack.roles.orchestratorRole);
    const unscoped = allowStatements(json)
      .filter((statement) => statement.resources.includes('*'))
      .map((statement) => JSON.stringify(statement))
      .sort();
    const expected = [
      { roles: [orchestratorRole], actions: ['ec2:DescribeFleets'], resources: ['*'] },
      { roles: [workerRole], actions: ['ec2:DescribeSpotPriceHistory'], resources: ['*'] },
    ]
      .map((statement) => JSON.stringify(statement))
      .sort();
    expect(unscoped).toEqual(expected);
  });

  it('scope worker and orchestrator access', () => {
    const { json, stack } = synth({ ...CLOUD_CONTEXT, temporalSecretArn: SECRET_ARN });
    const workerRole = logicalId(stack, stack.roles.workerRole);
    const orchestratorRole = logicalId(stack, stack.roles.orchestratorRole);
    const results = logicalId(stack, stack.storage.results);
    const table = logicalId(stack, stack.registry.table);
    const statements = allowStatements(json);
    const actionsOf = (role: string) => new Set(statements.filter((s) => s.roles.includes(role)).flatMap((s) => s.actions));

    const workerActions = actionsOf(workerRole);
    expect([...workerActions].sort()).toEqual(
      [
        'dynamodb:GetItem',
        'dynamodb:Query',
        'ec2:DescribeSpotPriceHistory',
        's3:GetObject',
        's3:ListBucket',
        's3:PutObject',
        'secretsmanager:GetSecretValue',
      ].sort(),
    );
    const workerPuts = statements.filter((s) => s.roles.includes(workerRole) && s.actions.includes('s3:PutObject'));
    expect(workerPuts).toHaveLength(1);
    expect(JSON.stringify(workerPuts[0].resources)).toContain(`"${results}"`);
    const secretRead = statements.find((s) => s.roles.includes(workerRole) && s.actions.includes('secretsmanager:GetSecretValue'));
    expect(secretRead?.resources).toEqual([SECRET_ARN]);

    const orchestratorActions = actionsOf(orchestratorRole);
    expect(orchestratorActions).toContain('s3:DeleteObject');
    expect(orchestratorActions).toContain('ec2:ModifyFleet');
    expect(orchestratorActions).not.toContain('dynamodb:PutItem');
    const registryRead = statements.find((s) => s.roles.includes(orchestratorRole) && s.actions.includes('dynamodb:Query'));
    expect(registryRead?.actions).toEqual(['dynamodb:GetItem', 'dynamodb:Query']);
    expect(JSON.stringify(registryRead?.resources)).toContain(`"${table}"`);
    const fleetResize = statements.find((s) => s.actions.includes('ec2:ModifyFleet'));
    expect(JSON.stringify(fleetResize?.resources)).toContain(`"${logicalId(stack, stack.gpuFleet.fleet)}"`);
  });

  it('ECR image gets a pull grant', () => {
    const image = '111111111111.dkr.ecr.us-east-1.amazonaws.com/skynewt:1.0.0';
    const { json } = synth({ orchestratorImage: image });
    const pull = allowStatements(json).find((s) => s.actions.includes('ecr:BatchGetImage'));
    expect(JSON.stringify(pull?.resources)).toContain(':ecr:us-east-1:111111111111:repository/skynewt');
    const token = allowStatements(json).find((s) => s.actions.includes('ecr:GetAuthorizationToken'));
    expect(token?.resources).toEqual(['*']);
    expect(json.Parameters.OrchestratorImage.Default).toBe(image);
  });

  it('worker instance profile', () => {
    const { template, stack } = synth();
    template.resourceCountIs('AWS::IAM::InstanceProfile', 1);
    template.hasResourceProperties('AWS::IAM::InstanceProfile', { Roles: [{ Ref: logicalId(stack, stack.roles.workerRole) }] });
  });
});

describe('GPU fleet', () => {
  it('maintains price-capacity-optimized spot', () => {
    const { json, template } = synth();
    template.resourceCountIs('AWS::EC2::EC2Fleet', 1);
    const [[, fleet]] = resourcesOfType(json, 'AWS::EC2::EC2Fleet');
    const properties = fleet.Properties;
    expect(properties.Type).toBe('maintain');
    expect(properties.SpotOptions.AllocationStrategy).toBe('price-capacity-optimized');
    expect(properties.TargetCapacitySpecification).toEqual({
      TotalTargetCapacity: 0,
      DefaultTargetCapacityType: 'spot',
      SpotTargetCapacity: 0,
      OnDemandTargetCapacity: 0,
    });
    const overrides = properties.LaunchTemplateConfigs[0].Overrides as Json[];
    const instanceTypes = new Set(overrides.map((override) => override.InstanceType));
    expect([...instanceTypes].sort()).toEqual(['g4dn.xlarge', 'g5.xlarge', 'g6.xlarge']);
    const subnets = new Set(overrides.map((override) => JSON.stringify(override.SubnetId)));
    expect(subnets.size).toBe(3);
    expect(overrides).toHaveLength(9);
  });

  it('takes instance types and capacity from context', () => {
    const { json } = synth({ gpuInstanceTypes: 'g6.2xlarge,g5.2xlarge', fleetTargetCapacity: '4' });
    const [[, fleet]] = resourcesOfType(json, 'AWS::EC2::EC2Fleet');
    const overrides = fleet.Properties.LaunchTemplateConfigs[0].Overrides as Json[];
    expect(new Set(overrides.map((override) => override.InstanceType))).toEqual(new Set(['g6.2xlarge', 'g5.2xlarge']));
    expect(fleet.Properties.TargetCapacitySpecification.TotalTargetCapacity).toBe(4);
    expect(fleet.Properties.TargetCapacitySpecification.OnDemandTargetCapacity).toBe(0);
  });

  it('rejects a single instance type', () => {
    expect(() => synth({ gpuInstanceTypes: 'g5.xlarge' })).toThrow(/at least two/);
  });

  it('launch template requires IMDSv2', () => {
    const { template, json } = synth();
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        MetadataOptions: Match.objectLike({ HttpTokens: 'required' }),
        InstanceInitiatedShutdownBehavior: 'terminate',
        IamInstanceProfile: Match.anyValue(),
      }),
    });
    const [[, launchTemplate]] = resourcesOfType(json, 'AWS::EC2::LaunchTemplate');
    expect(launchTemplate.Properties.LaunchTemplateData.ImageId).toEqual({ Ref: 'GpuAmiId' });
    expect(json.Parameters.GpuAmiId.Type).toBe('AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>');
    expect(json.Parameters.GpuAmiId.Default).toMatch(/^\/aws\/service\/deeplearning\/ami\/x86_64\//);
  });

  it('user data configures the worker', () => {
    const { json } = synth({ ...CLOUD_CONTEXT, temporalSecretArn: SECRET_ARN, prewarmModels: 'detector@3,direction' });
    const userData = userDataOf(json);
    expect(userData).toContain('\nSKYNEWT_EC2=true\n');
    expect(userData).toContain('\nSKYNEWT_MODELS=detector@3,direction\n');
    expect(userData).toContain('\nSKYNEWT_TEMPORAL_ADDRESS=skynewt.a1b2c.tmprl.cloud:7233\n');
    expect(userData).toContain('\nSKYNEWT_NAMESPACE=skynewt.a1b2c\n');
    expect(userData).toContain('\nSKYNEWT_REGISTRY_TABLE={token}\n');
    expect(userData).toContain('\nSKYNEWT_ARTIFACT_URI=s3://{token}/models\n');
    expect(userData).toContain(`\nSKYNEWT_TLS_SECRET_ARN=${SECRET_ARN}\n`);
    expect(userData).toContain('aws secretsmanager get-secret-value');
    expect(userData).toContain('ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js');
    expect(userData).toContain('cli/skynewt.js worker inference');
    expect(userData).toContain('systemctl enable --now skynewt-worker.service');
  });

  it('user data without TLS for plain self-hosted', () => {
    const { json, template } = synth({ temporalMode: 'self-hosted', temporalAddress: 'temporal.internal:7233' });
    const userData = userDataOf(json);
    expect(userData).toContain('\nSKYNEWT_TEMPORAL_ADDRESS=temporal.internal:7233\n');
    expect(userData).toContain('\nSKYNEWT_NAMESPACE=default\n');
    expect(userData).not.toContain('SKYNEWT_TLS_SECRET_ARN=');
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
  });
});

describe('Temporal access', () => {
  it('cloud mode creates an empty secret', () => {
    const { template, json, stack } = synth(CLOUD_CONTEXT);
    template.resourceCountIs('AWS::SecretsManager::Secret', 1);
    template.hasResourceProperties('AWS::SecretsManager::Secret', { SecretString: '{"tlsCert":"","tlsKey":""}' });
    const secretId = logicalId(stack, stack.temporal.tlsSecret);
    expect(json.Outputs.TemporalTlsSecretArn.Value).toEqual({ Ref: secretId });
  });

  it('cloud mode uses a given secret', () => {
    const { template, json } = synth({ ...CLOUD_CONTEXT, temporalSecretArn: SECRET_ARN });
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    expect(json.Outputs.TemporalTlsSecretArn.Value).toBe(SECRET_ARN);
  });

  it('rejects a non-cloud address in cloud mode', () => {
    expect(() => synth({ temporalMode: 'cloud', temporalAddress: 'temporal.internal:7233' })).toThrow(/tmprl\.cloud/);
  });

  it('rejects a partial secret ARN', () => {
    expect(() => synth({ ...CLOUD_CONTEXT, temporalSecretArn: 'arn:aws:secretsmanager:us-east-1:111111111111:secret:x' })).toThrow(
      /complete secret ARN/,
    );
  });
});

describe('orchestrator service', () => {
  it('runs the orchestrator worker on Fargate', () => {
    const { template, stack } = synth({ ...CLOUD_CONTEXT, orchestratorImage: 'public.ecr.aws/example/skynewt:1' });
    template.hasResourceProperties('AWS::ECS::Service', { LaunchType: 'FARGATE', DesiredCount: 1 });
    template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      RequiresCompatibilities: ['FARGATE'],
      TaskRoleArn: { 'Fn::GetAtt': [logicalId(stack, stack.roles.orchestratorRole), 'Arn'] },
      ContainerDefinitions: [
        Match.objectLike({
          Image: { Ref: 'OrchestratorImage' },
          Command: ['node', 'cli/skynewt.js', 'worker', 'orchestrator'],
          Environment: Match.arrayWith([
            { Name: 'SKYNEWT_TEMPORAL_ADDRESS', Value: 'skynewt.a1b2c.tmprl.cloud:7233' },
            { Name: 'SKYNEWT_NAMESPACE', Value: 'skynewt.a1b2c' },
          ]),
          Secrets: Match.arrayWith([Match.objectLike({ Name: 'SKYNEWT_TEMPORAL_TLS_CERT' }), Match.objectLike({ Name: 'SKYNEWT_TEMPORAL_TLS_KEY' })]),
        }),
      ],
    });
  });
});

describe('network', () => {
  it('spreads subnets over Fn::GetAZs zones', () => {
    const { json } = synth({ zoneCount: '2' });
    const zones = resourcesOfType(json, 'AWS::EC2::Subnet').map(([, subnet]) => subnet.Properties.AvailabilityZone);
    expect(zones).toEqual([0, 1].map((index) => ({ 'Fn::Select': [index, { 'Fn::GetAZs': '' }] })));
  });

  it('takes zones from context', () => {
    const { json } = synth({ availabilityZones: 'us-east-1b,us-east-1d' });
    const zones = resourcesOfType(json, 'AWS::EC2::Subnet').map(([, subnet]) => subnet.Properties.AvailabilityZone);
    expect(zones).toEqual(['us-east-1b', 'us-east-1d']);
  });

  it('imports a VPC from context ids', () => {
    const { json, template } = synth({
      vpcId: 'vpc-0123456789abcdef0',
      subnetIds: 'subnet-0aaa1111aaaa11111,subnet-0bbb2222bbbb22222',
      subnetAvailabilityZones: 'us-east-1a,us-east-1b',
    });
    template.resourceCountIs('AWS::EC2::VPC', 0);
    const [[, fleet]] = resourcesOfType(json, 'AWS::EC2::EC2Fleet');
    const subnets = new Set((fleet.Properties.LaunchTemplateConfigs[0].Overrides as Json[]).map((override) => override.SubnetId));
    expect(subnets).toEqual(new Set(['subnet-0aaa1111aaaa11111', 'subnet-0bbb2222bbbb22222']));
  });
});

describe('stack outputs', () => {
  it('name buckets, table, fleet and roles', () => {
    const { json } = synth();
    for (const name of [
      'InputsBucketName',
      'ResultsBucketName',
      'ArtifactsBucketName',
      'RegistryTableName',
      'GpuFleetId',
      'OrchestratorRoleArn',
      'WorkerRoleArn',
    ]) {
      expect(json.Outputs[name], name).toBeDefined();
    }
  });
});

describe('cdk synth CLI', () => {
  it('synthesizes offline', () => {
    const outDir = mkdtempSync(path.join(os.tmpdir(), 'skynewt-cdk-'));
    const home = mkdtempSync(path.join(os.tmpdir(), 'skynewt-cdk-home-'));
    try {
      // Only PATH is inherited: no AWS credentials, profile or endpoint reach the CLI, so it has
      // nothing to call AWS with, and the metadata service is off for its credential lookup.
      const env = {
        PATH: process.env.PATH ?? '',
        HOME: home,
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_CONFIG_FILE: path.join(home, 'aws-config'),
        AWS_SHARED_CREDENTIALS_FILE: path.join(home, 'aws-credentials'),
        CDK_DISABLE_VERSION_CHECK: 'true',
        CDK_DISABLE_CLI_TELEMETRY: 'true',
        npm_config_update_notifier: 'false',
        npm_config_offline: 'true',
      };
      const started = Date.now();
      const result = spawnSync(
        'npx',
        ['--no-install', 'cdk', 'synth', '--no-notices', '--quiet', '--output', outDir, '-c', 'temporalMode=cloud', '-c', 'temporalAddress=skynewt.a1b2c.tmprl.cloud:7233'],
        { cwd: CDK_DIR, env, encoding: 'utf8', timeout: 60_000 },
      );
      const seconds = (Date.now() - started) / 1000;
      expect(result.status, `${result.stdout}\n${result.stderr}`).toBe(0);
      expect(seconds).toBeLessThan(60);

      const manifest = JSON.parse(readFileSync(path.join(outDir, 'manifest.json'), 'utf8'));
      expect(manifest.missing).toBeUndefined();
      const template = JSON.parse(readFileSync(path.join(outDir, 'SkyNewt.template.json'), 'utf8'));
      expect(Object.values(template.Resources as Json).some((resource) => resource.Type === 'AWS::EC2::EC2Fleet')).toBe(true);
    } finally {
      rmSync(outDir, { recursive: true, force: true });
      rmSync(home, { recursive: true, force: true });
    }
  }, 90_000);
});
