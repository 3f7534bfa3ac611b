/**
 * Reads and sets the target capacity of an EC2 Fleet of type `maintain` with DescribeFleets and
 * ModifyFleet. The default client takes the SDK's usual configuration (AWS_REGION, AWS_PROFILE,
 * AWS_ENDPOINT_URL_EC2 or AWS_ENDPOINT_URL).
 */
import { DescribeFleetsCommand, EC2Client, ModifyFleetCommand } from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { FLEET_NOT_FOUND, INVALID_FLEET_TYPE, type FleetCapacity } from './types';

/** The two EC2 Fleet calls the controller makes. */
export interface FleetApi {
  describeFleet(fleetId: string): Promise<FleetCapacity>;
  setTargetCapacity(fleetId: string, targetCapacity: number): Promise<void>;
}

export function createEc2FleetApi(client: EC2Client = new EC2Client({})): FleetApi {
  return {
    async describeFleet(fleetId) {
      let fleets;
      try {
        ({ Fleets: fleets } = await client.send(new DescribeFleetsCommand({ FleetIds: [fleetId] })));
      } catch (err) {
        if ((err as Error).name === 'InvalidFleetId.NotFound' || (err as Error).name === 'InvalidFleetId.Malformed') throw fleetNotFound(fleetId, err as Error);
        throw err;
      }
      const fleet = fleets?.find((candidate) => candidate.FleetId === fleetId);
      if (fleet === undefined) throw fleetNotFound(fleetId);
      const type = fleet.Type ?? 'maintain';
      if (type !== 'maintain') {
        throw ApplicationFailure.nonRetryable(
          `EC2 Fleet ${fleetId} is of type ${type}; the fleet controller needs a fleet of type maintain, because only such a fleet keeps its target capacity.`,
          INVALID_FLEET_TYPE,
        );
      }
      return {
        fleetId,
        type,
        state: fleet.FleetState ?? 'unknown',
        targetCapacity: fleet.TargetCapacitySpecification?.TotalTargetCapacity ?? 0,
        fulfilledCapacity: fleet.FulfilledCapacity ?? 0,
      };
    },

    async setTargetCapacity(fleetId, targetCapacity) {
      // Instances above a lowered target are terminated; a drained worker's shard resumes from its checkpoint elsewhere.
      await client.send(new ModifyFleetCommand({
        FleetId: fleetId,
        TargetCapacitySpecification: { TotalTargetCapacity: targetCapacity },
        ExcessCapacityTerminationPolicy: 'termination',
      }));
    },
  };
}

function fleetNotFound(fleetId: string, cause?: Error): ApplicationFailure {
  return ApplicationFailure.create({
    message: `EC2 Fleet ${fleetId} not found in this region (${cause?.message ?? 'DescribeFleets listed no such fleet'}); check the fleet id and AWS_REGION.`,
    type: FLEET_NOT_FOUND,
    nonRetryable: true,
    cause,
  });
}
