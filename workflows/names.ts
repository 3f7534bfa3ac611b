/** Names users type: task queues, the workflow type and the query. */
export const ORCHESTRATOR_TASK_QUEUE = 'skynewt-orchestrator';
export const GPU_SPOT_TASK_QUEUE = 'skynewt-gpu-spot';
export const GPU_ONDEMAND_TASK_QUEUE = 'skynewt-gpu-ondemand';
export const BATCH_WORKFLOW_TYPE = 'batchInference';
export const PROGRESS_QUERY = 'progress';
