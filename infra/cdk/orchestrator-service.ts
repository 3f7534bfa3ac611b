/**
 * The orchestrator worker as one ECS Fargate task: `node cli/skynewt.js worker orchestrator`.
 *
 * Fargate rather than an Auto Scaling group, because the orchestrator needs no GPU and little CPU
 * and must stay on on-demand capacity, so that a spot reclaim never stops the bookkeeping of a
 * batch. Fargate also leaves no host, AMI or agent to patch. ECS restarts a task that exits, and
 * the deployment circuit breaker rolls back an image that cannot start.
 */
import { CfnParameter, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { TLS_CERT_FIELD, TLS_KEY_FIELD, type TemporalAccess } from './temporal-access';

export interface OrchestratorServiceProps {
  vpc: ec2.IVpc;
  subnets: ec2.ISubnet[];
  assignPublicIp: boolean;
  taskRole: iam.IRole;
  temporal: TemporalAccess;
  /** Image from context `orchestratorImage`; it becomes the default of the OrchestratorImage parameter. */
  image?: string;
  environment: Record<string, string>;
  temporalPort: number;
}

export class OrchestratorService extends Construct {
  readonly service: ecs.FargateService;
  readonly taskDefinition: ecs.FargateTaskDefinition;

  constructor(scope: Construct, id: string, props: OrchestratorServiceProps) {
    super(scope, id);

    const imageParameter = new CfnParameter(Stack.of(this), 'OrchestratorImage', {
      type: 'String',
      ...(props.image ? { default: props.image } : {}),
      description:
        'Container image of the orchestrator: this repository after npm ci, with the checkout root as working directory.',
    });

    const cluster = new ecs.Cluster(this, 'Cluster', { vpc: props.vpc });
    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: 512,
      memoryLimitMiB: 1024,
      taskRole: props.taskRole,
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.X86_64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });

    // ECS reads the secret with the task execution role and passes the PEM text in the environment.
    const tlsSecret = props.temporal.tlsSecret;
    const secrets = tlsSecret
      ? {
          SKYNEWT_TEMPORAL_TLS_CERT: ecs.Secret.fromSecretsManager(tlsSecret, TLS_CERT_FIELD),
          SKYNEWT_TEMPORAL_TLS_KEY: ecs.Secret.fromSecretsManager(tlsSecret, TLS_KEY_FIELD),
        }
      : undefined;

    this.taskDefinition.addContainer('orchestrator', {
      image: ecs.ContainerImage.fromRegistry(imageParameter.valueAsString),
      command: ['node', 'cli/skynewt.js', 'worker', 'orchestrator'],
      environment: props.environment,
      secrets,
      logging: ecs.LogDrivers.awsLogs({ streamPrefix: 'orchestrator', logGroup }),
      // Time for worker.shutdown() to finish running activities after SIGTERM (the Fargate maximum is 120 s).
      stopTimeout: Duration.seconds(120),
    });
    grantEcrPull(this, props.image, this.taskDefinition);

    const securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'SkyNewt orchestrator: no inbound rules, outbound HTTPS (AWS APIs, image registry) and the Temporal port.',
      allowAllOutbound: false,
    });
    securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'AWS APIs and the image registry');
    if (props.temporalPort !== 443) {
      securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(props.temporalPort), 'Temporal frontend');
    }

    this.service = new ecs.FargateService(this, 'Service', {
      cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: 1,
      // Two orchestrators poll the same task queue safely, so a deployment starts the new task first.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      assignPublicIp: props.assignPublicIp,
      vpcSubnets: { subnets: props.subnets },
      securityGroups: [securityGroup],
      circuitBreaker: { rollback: true },
    });
  }
}

/**
 * Lets the task execution role pull the context's image when it is in a private ECR repository
 * of this account and region. An image given only as a deploy-time parameter gets no grant.
 */
function grantEcrPull(scope: Construct, image: string | undefined, taskDefinition: ecs.FargateTaskDefinition): void {
  const stack = Stack.of(scope);
  const match = image === undefined ? null : /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com\/([^:@]+)/.exec(image);
  if (match === null) return;
  const [, account, region, repositoryName] = match;
  const repositoryArn = stack.formatArn({ service: 'ecr', account, region, resource: 'repository', resourceName: repositoryName });
  // grantPull also adds ecr:GetAuthorizationToken, which has no resource-level permissions (Resource "*").
  ecr.Repository.fromRepositoryAttributes(scope, 'ImageRepository', { repositoryArn, repositoryName }).grantPull(taskDefinition.obtainExecutionRole());
}
