/**
 * Exports a finished batch's workflow history, every run of it when the batch continued as new,
 * as JSON next to its manifest, so the audit trail outlives the server's retention period.
 */
import { Context, log } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { History } from '@temporalio/common/lib/proto-utils';
import type { ObjectStore } from '../storage/object-store';
import { historyUri } from '../write-manifest';

export interface ExportHistoryRequest {
  workflowId: string;
  /** The run that calls the activity, which is the batch's last run. */
  runId: string;
  outputUri: string;
}

export interface ExportedRun {
  runId: string;
  /** Run that this one continued as new from, or null for the batch's first run. */
  continuedFrom: string | null;
  events: number;
  /** The run's History message as JSON; see HISTORY_FORMAT. */
  history: unknown;
}

/**
 * Format of each run's history: the temporal.api.history.v1.History message as protobufjs
 * `toJSON()` writes it. Enums are names, 64-bit integers are decimal strings, bytes are base64,
 * and timestamps are `{ seconds, nanos }` objects.
 * NOTE: `historyToJSON` from @temporalio/common (proto3 JSON, loadable by `historyFromJSON` and
 * the replayer) fails here with "type must be a Type", because @temporalio/common and
 * @temporalio/proto each load their own copy of protobufjs 8 in this install.
 */
export const HISTORY_FORMAT = 'protobufjs-json';

/** Content of `<output>/history.json`. */
export interface HistoryExport {
  format: typeof HISTORY_FORMAT;
  workflowId: string;
  exportedAt: string;
  /** Runs in start order, the first run first. */
  runs: ExportedRun[];
}

/** Runs followed back through continue-as-new before the export gives up. */
const MAX_RUNS = 10_000;

export function createExportHistory(deps: { store: ObjectStore; temporal?: Client }) {
  return async function exportHistory(request: ExportHistoryRequest): Promise<{ historyUri: string | null }> {
    if (deps.temporal === undefined) {
      log.warn('Workflow history not exported: the orchestrator worker has no Temporal client', { workflowId: request.workflowId });
      return { historyUri: null };
    }
    const context = Context.current();

    // Each run's WorkflowExecutionStarted event names the run it continued from, so the chain is
    // followed back from the last run. Visibility lists runs only after a delay, so it is not used.
    const runs: ExportedRun[] = [];
    let runId: string | null = request.runId;
    while (runId !== null && runs.length < MAX_RUNS) {
      const history: History = await deps.temporal.workflow.getHandle(request.workflowId, runId).fetchHistory();
      const started: NonNullable<History['events']>[number]['workflowExecutionStartedEventAttributes'] = history.events?.[0]?.workflowExecutionStartedEventAttributes;
      const continuedFrom: string | null = started?.continuedExecutionRunId || null;
      runs.unshift({ runId, continuedFrom, events: history.events?.length ?? 0, history: toPlainJson(history) });
      context.heartbeat({ runsExported: runs.length });
      runId = continuedFrom;
    }

    // NOTE: the export runs inside the batch's last run, so that run's history ends with this
    // activity's scheduling and lacks the final WorkflowExecutionCompleted event.
    const body: HistoryExport = { format: HISTORY_FORMAT, workflowId: request.workflowId, exportedAt: new Date().toISOString(), runs };
    const uri = historyUri(request.outputUri);
    await deps.store.put(uri, JSON.stringify(body) + '\n', { contentType: 'application/json' });
    log.info('Workflow history exported', { workflowId: request.workflowId, history: uri, runs: runs.length });
    return { historyUri: uri };
  };
}

/**
 * Converts a decoded protobuf message to plain JSON. Message instances convert themselves through
 * `toJSON()`; the replacer covers plain objects that still hold Long values or byte arrays.
 */
function toPlainJson(message: unknown): unknown {
  return JSON.parse(
    JSON.stringify(message, (_key, value: unknown) => {
      if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
      if (isLong(value)) return value.toString();
      return value;
    }),
  );
}

function isLong(value: unknown): value is { toString(): string } {
  return typeof value === 'object' && value !== null && 'low' in value && 'high' in value && 'unsigned' in value;
}
