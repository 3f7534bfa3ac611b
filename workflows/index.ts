/** Workflows registered by the orchestrator worker. */
export { batchInference, progressQuery } from './batch-inference';
export { fleetController, decisionsQuery, stopSignal } from './fleet-controller';
