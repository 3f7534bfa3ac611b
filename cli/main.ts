/** The `skynewt` command line. */
import { Command } from 'commander';
import { disableMetadataOffEc2 } from '../activities/local-home';
import { addBatchCommands } from './batch-commands';
import { addCodecServerCommand } from './codec-server-command';
import { addCostCommand } from './cost-command';
import { addEstimateCommand } from './estimate-command';
import { addDemoCommand } from './demo';
import { addDrillCommand } from './drill-command';
import { addFleetCommand } from './fleet-command';
import { addLineageCommand } from './lineage-command';
import { addModelCommands } from './model-commands';
import { addStackCommands } from './stack-commands';
import { addVerifyCommand } from './verify-command';
import { UsageError } from './output';

disableMetadataOffEc2();

const program = new Command('skynewt')
  .description('Run ONNX vision models over large image batches on Temporal, with lineage and cost per result.')
  .showHelpAfterError();

addStackCommands(program);
addModelCommands(program);
addBatchCommands(program);
addCostCommand(program);
addEstimateCommand(program);
addDemoCommand(program);
addDrillCommand(program);
addFleetCommand(program);
addVerifyCommand(program);
addLineageCommand(program);
addCodecServerCommand(program);

/**
 * Exits once stdout and stderr have handed all pending output to the OS. Writes to a pipe are
 * asynchronous, so exiting at once would cut long output (such as a large manifest) short.
 */
function exitAfterOutput(code: number): void {
  let pending = 2;
  const done = () => {
    pending -= 1;
    if (pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

program.parseAsync(process.argv).then(
  () => {
    // Clients keep gRPC connections open; the command is done once its action resolves.
    exitAfterOutput(Number(process.exitCode ?? 0));
  },
  (err: unknown) => {
    // Errors with a known cause print their message only; anything else keeps its stack.
    const known = err instanceof UsageError || (err instanceof Error && /^(ModelNotFound|ModelVersionConflict|ModelAliasConflict|InvalidModelName|InvalidModelSpec|NotFound)$/.test(err.name));
    console.error(known ? `Error: ${(err as Error).message}` : err);
    exitAfterOutput(1);
  },
);
