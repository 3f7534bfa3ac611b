/**
 * The capacity of an EC2 worker, read from instance metadata. Environment variables still win,
 * so a launch template can pin a value the metadata service would report differently.
 */
import { capacityFromEnv } from '../activities/capacity';
import type { Capacity } from '../activities/types';
import type { InstanceMetadataClient } from './instance-metadata';

export async function capacityFromMetadata(metadata: InstanceMetadataClient, env: NodeJS.ProcessEnv = process.env): Promise<Capacity> {
  const [instanceId, instanceType, zone, lifeCycle] = await Promise.all([
    metadata.get('instance-id'),
    metadata.get('instance-type'),
    metadata.get('placement/availability-zone'),
    metadata.get('instance-life-cycle'),
  ]);
  return capacityFromEnv({
    SKYNEWT_INSTANCE_ID: instanceId ?? undefined,
    SKYNEWT_INSTANCE_TYPE: instanceType ?? undefined,
    SKYNEWT_AVAILABILITY_ZONE: zone ?? undefined,
    // The service reports `spot`, `on-demand` or `scheduled`; scheduled instances are billed on demand.
    SKYNEWT_LIFECYCLE: lifeCycle === 'spot' ? 'spot' : 'on-demand',
    ...definedOnly(env),
  });
}

function definedOnly(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
}
