/**
 * The GPU workers: a launch template (GPU AMI from an SSM parameter, IMDSv2 only, the worker
 * user data) and an EC2 Fleet of type `maintain` that keeps spot capacity. The fleet spans
 * several instance types and every subnet, so price-capacity-optimized has many pools to pick from.
 *
 * The fleet starts at the context's target capacity (0 by default). The fleet controller
 * workflow resizes it with ec2:ModifyFleet.
 */
import { CfnParameter, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { DEFAULT_GPU_AMI_SSM_PARAMETER } from './config';

export interface GpuFleetProps {
  vpc: ec2.IVpc;
  subnets: ec2.ISubnet[];
  instanceTypes: string[];
  targetCapacity: number;
  instanceProfile: iam.IInstanceProfile;
  userData: ec2.UserData;
  /** TCP port of the Temporal frontend, the only egress besides HTTPS. */
  temporalPort: number;
}

export class GpuFleet extends Construct {
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly fleet: ec2.CfnEC2Fleet;
  readonly securityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: GpuFleetProps) {
    super(scope, id);

    // A stack parameter, so the AMI can change without a code change. CloudFormation resolves
    // the SSM path to an AMI id when the stack deploys.
    const amiParameter = new CfnParameter(Stack.of(this), 'GpuAmiId', {
      type: 'AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>',
      default: DEFAULT_GPU_AMI_SSM_PARAMETER,
      description: 'SSM parameter that contains the GPU AMI id of the inference workers (x86_64, NVIDIA driver and CUDA 12).',
    });
    const machineImage: ec2.IMachineImage = {
      getImage: () => ({ imageId: amiParameter.valueAsString, osType: ec2.OperatingSystemType.LINUX, userData: props.userData }),
    };

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'SkyNewt GPU workers: no inbound rules, outbound HTTPS (AWS APIs, nodejs.org, npm) and the Temporal port.',
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'AWS APIs, nodejs.org and the npm registry');
    if (props.temporalPort !== 443) {
      this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(props.temporalPort), 'Temporal frontend');
    }

    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage,
      userData: props.userData,
      instanceProfile: props.instanceProfile,
      securityGroup: this.securityGroup,
      requireImdsv2: true,
      httpTokens: ec2.LaunchTemplateHttpTokens.REQUIRED,
      // The worker runs on the host, one hop from the metadata service. Containers would need 2.
      httpPutResponseHopLimit: 1,
      // The worker service powers the host off once it has drained. Terminate it then, so the fleet replaces it.
      instanceInitiatedShutdownBehavior: ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
    });

    const overrides = props.instanceTypes.flatMap((instanceType) =>
      props.subnets.map((subnet) => ({ instanceType, subnetId: subnet.subnetId })),
    );
    this.fleet = new ec2.CfnEC2Fleet(this, 'Fleet', {
      type: 'maintain',
      targetCapacitySpecification: {
        totalTargetCapacity: props.targetCapacity,
        defaultTargetCapacityType: 'spot',
        spotTargetCapacity: props.targetCapacity,
        // NOTE: no on-demand base, and nothing in this stack polls the on-demand task queue
        // (skynewt-gpu-ondemand) that shards move to after repeated spot losses.
        onDemandTargetCapacity: 0,
      },
      spotOptions: {
        allocationStrategy: 'price-capacity-optimized',
        instanceInterruptionBehavior: 'terminate',
      },
      replaceUnhealthyInstances: true,
      // When the controller lowers the target, EC2 terminates surplus instances. Each gets a spot
      // interruption notice first, so its worker drains.
      excessCapacityTerminationPolicy: 'termination',
      launchTemplateConfigs: [
        {
          launchTemplateSpecification: {
            launchTemplateId: this.launchTemplate.launchTemplateId,
            // CloudFormation replaces an EC2 Fleet (new id, instances terminated) when its launch
            // template version changes. With $Latest, a user data change reaches new instances
            // without a replacement. Changing instance types or subnets still replaces the fleet.
            version: '$Latest',
          },
          overrides,
        },
      ],
    });
  }
}
