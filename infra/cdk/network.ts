/**
 * The VPC for the orchestrator and the GPU fleet: a new one with public subnets in each zone,
 * or an existing one imported from context ids (never looked up, so synth stays offline).
 *
 * The new VPC has no NAT gateway: a NAT gateway bills per hour and per GB, which for image
 * batches would approach the spot savings. Instances and tasks get public IPs instead, and their
 * security groups allow no inbound traffic. S3 and DynamoDB traffic stays in the VPC through free gateway endpoints.
 */
import { Annotations, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Construct } from 'constructs';
import type { ImportedVpcSettings } from './config';

export interface NetworkProps {
  importedVpc?: ImportedVpcSettings;
}

export class Network extends Construct {
  readonly vpc: ec2.IVpc;
  /** Subnets for the GPU fleet and the orchestrator, one or more per zone. */
  readonly subnets: ec2.ISubnet[];
  /** Whether tasks and instances need a public IP to reach AWS APIs and Temporal. */
  readonly assignPublicIp: boolean;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const imported = props.importedVpc;
    if (imported) {
      this.vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: imported.vpcId,
        availabilityZones: imported.availabilityZones,
        ...(imported.subnetsArePublic ? { publicSubnetIds: imported.subnetIds } : { privateSubnetIds: imported.subnetIds }),
      });
      this.subnets = imported.subnetsArePublic ? this.vpc.publicSubnets : this.vpc.privateSubnets;
      for (const subnet of this.subnets) {
        Annotations.of(subnet).acknowledgeWarning(
          '@aws-cdk/aws-ec2:noSubnetRouteTableId',
          'Nothing in this stack reads the route table of an imported subnet.',
        );
      }
      this.assignPublicIp = imported.subnetsArePublic;
      return;
    }

    const vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr('10.42.0.0/16'),
      maxAzs: Stack.of(this).availabilityZones.length,
      // One public subnet in each of SkyNewtStack.availabilityZones, which needs no lookup at synth.
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 20 }],
      gatewayEndpoints: {
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
        DynamoDB: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
      },
    });
    this.vpc = vpc;
    this.subnets = vpc.publicSubnets;
    this.assignPublicIp = true;
  }
}
