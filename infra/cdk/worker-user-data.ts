/**
 * User data of the GPU hosts (Ubuntu-based Deep Learning AMI, which ships the NVIDIA driver,
 * CUDA 12 and the AWS CLI). At boot it installs Node.js and this repository, fetches the CUDA
 * build of onnxruntime-node, and runs `skynewt worker inference` as a systemd service.
 *
 * The service's start script reads the Temporal mTLS secret on every start, so a restarted
 * worker picks up a rotated certificate.
 */
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { TLS_CERT_FIELD, TLS_KEY_FIELD } from './temporal-access';

export interface WorkerUserDataProps {
  region: string;
  nodeVersion: string;
  /** `s3://bucket/key` of a tarball of this repository (without node_modules). */
  bundleUri: string;
  /** Environment of the worker process. Values must not contain newlines. */
  environment: Record<string, string>;
  /** ARN of the Temporal mTLS secret; without it the worker connects without TLS. */
  tlsSecretArn?: string;
}

const APP_DIR = '/opt/skynewt';
const NODE_DIR = '/opt/node';
const START_SCRIPT = '/usr/local/bin/skynewt-worker';

export function workerUserData(props: WorkerUserDataProps): ec2.UserData {
  const userData = ec2.UserData.forLinux();
  const nodeTarball = `node-v${props.nodeVersion}-linux-x64.tar.xz`;
  const nodeBase = `https://nodejs.org/dist/v${props.nodeVersion}`;
  const environment = { ...props.environment, ...(props.tlsSecretArn ? { SKYNEWT_TLS_SECRET_ARN: props.tlsSecretArn } : {}) };

  userData.addCommands(
    'set -euo pipefail',
    // Node.js from nodejs.org, checked against the release's published SHA-256 sums.
    'cd /tmp',
    `curl -fsSLO ${nodeBase}/${nodeTarball}`,
    `curl -fsSLO ${nodeBase}/SHASUMS256.txt`,
    `grep " ${nodeTarball}$" SHASUMS256.txt | sha256sum -c -`,
    `mkdir -p ${NODE_DIR} && tar -xJf ${nodeTarball} -C ${NODE_DIR} --strip-components=1`,
    `export PATH=${NODE_DIR}/bin:$PATH`,

    'id skynewt >/dev/null 2>&1 || useradd --system --home-dir /var/lib/skynewt --create-home --shell /usr/sbin/nologin skynewt',
    `mkdir -p ${APP_DIR} /etc/skynewt`,
    `aws s3 cp --region ${props.region} --only-show-errors ${props.bundleUri} /tmp/skynewt.tar.gz`,
    `tar -xzf /tmp/skynewt.tar.gz -C ${APP_DIR}`,
    `cd ${APP_DIR}`,
    // The repository's .npmrc skips onnxruntime-node's download step, so npm ci installs the CPU
    // build. The package's own install script then fetches the CUDA 12 execution provider.
    'npm ci --omit=dev --no-audit --no-fund',
    'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js',
    `chown -R root:root ${APP_DIR}`,

    `cat > /etc/skynewt/worker.env <<'SKYNEWT_ENV'`,
    ...Object.entries(environment).map(([name, value]) => `${name}=${value}`),
    'SKYNEWT_ENV',

    `cat > ${START_SCRIPT} <<'SKYNEWT_START'`,
    ...startScript(),
    'SKYNEWT_START',
    `chmod 755 ${START_SCRIPT}`,

    `cat > /etc/systemd/system/skynewt-worker.service <<'SKYNEWT_UNIT'`,
    ...serviceUnit(),
    'SKYNEWT_UNIT',
    'systemctl daemon-reload',
    'systemctl enable --now skynewt-worker.service',
  );
  return userData;
}

/** Reads the mTLS certificate and key into the environment, then replaces itself with the worker. */
function startScript(): string[] {
  const readField = (field: string) =>
    `node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8"))[process.argv[1]] ?? "")' ${field}`;
  return [
    '#!/bin/bash',
    'set -euo pipefail',
    'if [ -n "${SKYNEWT_TLS_SECRET_ARN:-}" ]; then',
    '  secret=$(aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$SKYNEWT_TLS_SECRET_ARN" --query SecretString --output text)',
    `  SKYNEWT_TEMPORAL_TLS_CERT=$(printf '%s' "$secret" | ${readField(TLS_CERT_FIELD)})`,
    `  SKYNEWT_TEMPORAL_TLS_KEY=$(printf '%s' "$secret" | ${readField(TLS_KEY_FIELD)})`,
    '  if [ -z "$SKYNEWT_TEMPORAL_TLS_CERT" ] || [ -z "$SKYNEWT_TEMPORAL_TLS_KEY" ]; then',
    `    echo "Secret $SKYNEWT_TLS_SECRET_ARN has an empty ${TLS_CERT_FIELD} or ${TLS_KEY_FIELD}: store the Temporal client certificate and key (PEM) there." >&2`,
    '    exit 1',
    '  fi',
    '  export SKYNEWT_TEMPORAL_TLS_CERT SKYNEWT_TEMPORAL_TLS_KEY',
    'fi',
    `exec ${NODE_DIR}/bin/node cli/skynewt.js worker inference`,
  ];
}

function serviceUnit(): string[] {
  return [
    '[Unit]',
    'Description=SkyNewt inference worker',
    'Wants=network-online.target',
    'After=network-online.target',
    '',
    '[Service]',
    'User=skynewt',
    `WorkingDirectory=${APP_DIR}`,
    'EnvironmentFile=/etc/skynewt/worker.env',
    `Environment=PATH=${NODE_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    `ExecStart=${START_SCRIPT}`,
    'Restart=on-failure',
    'RestartSec=10',
    // SIGTERM drains the worker: running shards hand back their checkpoints within seconds, well
    // inside the two-minute spot notice.
    'KillSignal=SIGTERM',
    'TimeoutStopSec=110',
    // A worker that exits 0 has drained after a spot notice, a rebalance recommendation or a stop,
    // and polls no more. Powering off terminates the host (the launch template sets
    // instance-initiated shutdown to terminate), and the maintain fleet replaces it, instead of
    // paying for an idle GPU. The + runs this line as root.
    `ExecStopPost=+/bin/sh -c 'if [ "$SERVICE_RESULT" = success ]; then systemctl poweroff; fi'`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
  ];
}
