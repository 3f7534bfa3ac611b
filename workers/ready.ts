/** Line a worker prints once it polls; `skynewt up` waits for it in the worker's log. */
export const WORKER_READY_MARKER = 'SKYNEWT_WORKER_READY';
