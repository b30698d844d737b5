// Shared by the DebugClient suites: where things are, and small helpers.
'use strict';

const assert = require('assert');
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

// DAPPER_TRIO_DAP names the `dapper-trio` executable to test and
// DAPPER_TRIO_PYTHON the interpreter of its venv (tests/test_dap_client.py
// sets both to those of the running venv).
const EXECUTABLE = process.env.DAPPER_TRIO_DAP || 'dapper-trio';
const PYTHON = process.env.DAPPER_TRIO_PYTHON || 'python3';
const PROGRAMS = path.join(__dirname, '..', 'programs');
// Generous: two shared cores start a Python adapter and a Python debuggee.
const TIMEOUT = 30000;

/** The launch arguments that pick each backend. */
const BACKENDS = [
  { name: 'external process', launch: {}, mainThread: 'MainThread' },
  { name: 'inProcess', launch: { inProcess: true }, mainThread: 'dapper-trio program' },
];

/** The full path of test program `name`. */
function program(name) {
  return path.join(PROGRAMS, name);
}

/** The 1-based number of the line of `file` ending with `# mark: NAME`. */
function lineOf(file, name) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const index = lines.findIndex((line) => line.trimEnd().endsWith(`# mark: ${name}`));
  assert.ok(index >= 0, `no line marked ${name} in ${file}`);
  return index + 1;
}

/** The 1-based number of the first blank line of `file`. */
function blankLineOf(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  return lines.findIndex((line) => line.trim() === '') + 1;
}

/** A DebugClient on a fresh `dapper-trio dap`, started. */
async function startClient() {
  const dc = new DebugClient(EXECUTABLE, 'dap', 'dapper-trio');
  dc.defaultTimeout = TIMEOUT;
  await dc.start();
  return dc;
}

/**
 * Send `disconnect` with `args`; the adapter then exits by itself, so the
 * client is done (`stopClient` will not send another disconnect).
 */
async function disconnect(dc, args) {
  const response = await dc.disconnectRequest(args);
  dc.disconnected = true;
  dc.stopAdapter();
  return response;
}

/** End the client's session (its adapter too), unless `disconnect` did. */
function stopClient(dc) {
  if (dc.disconnected) {
    return Promise.resolve();
  }
  return dc.stop();
}

/**
 * initialize, launch (or attach), then on `initialized` run `configure(dc)`
 * and configurationDone.  Resolves with the first `stopped` event if
 * `expectStop`, else once configurationDone is answered.
 */
async function startSession(dc, request, args, configure, expectStop = true) {
  const stopped = expectStop ? dc.waitForEvent('stopped') : null;
  const configured = dc.waitForEvent('initialized').then(async () => {
    if (configure) {
      await configure(dc);
    }
    await dc.configurationDoneRequest();
  });
  await dc.initializeRequest();
  await Promise.all([
    configured,
    request === 'attach' ? dc.attachRequest(args) : dc.launchRequest(args),
  ]);
  return stopped;
}

/** Every event called `name` from now on, collected in an array. */
function collect(dc, name) {
  const events = [];
  dc.on(name, (event) => events.push(event));
  return events;
}

/** The top frame of `threadId`'s stack. */
async function topFrame(dc, threadId) {
  const stack = await dc.stackTraceRequest({ threadId });
  return stack.body.stackFrames[0];
}

/** The variables of scope `name` (Locals, Globals, Trio) of frame `frameId`. */
async function scopeVariables(dc, frameId, name = 'Locals') {
  const scopes = await dc.scopesRequest({ frameId });
  const scope = scopes.body.scopes.find((s) => s.name === name);
  assert.ok(scope, `no scope ${name}`);
  const found = await dc.variablesRequest({ variablesReference: scope.variablesReference });
  return { reference: scope.variablesReference, variables: found.body.variables };
}

/**
 * Start `argv` (a Python program that listens) and resolve with the process
 * and the attach arguments it announces: a JSON line on stdout, or
 * dapper-trio's "attach with address ... and token ..." line on stderr.
 */
function startListener(command, argv) {
  const child = childProcess.spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = { stdout: '', stderr: '' };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no attach arguments within ${TIMEOUT} ms: ${JSON.stringify(output)}`));
    }, TIMEOUT);
    const found = (args) => {
      clearTimeout(timer);
      resolve({ child, args, output });
    };
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      output.stdout += `${line}\n`;
      if (line.startsWith('{')) {
        found(JSON.parse(line));
      }
    });
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      output.stderr += `${line}\n`;
      const match = /attach with address (\S+) and token (\S+)/.exec(line);
      if (match) {
        found({ address: match[1], token: match[2] });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the program exited (${code}) before listening: ${JSON.stringify(output)}`));
    });
  });
}

/**
 * Resolve with `child`'s exit code, or the signal that ended it, once it
 * exits (or reject after `timeout`).
 */
function exitOf(child, timeout = TIMEOUT) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode ?? child.signalCode);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the program did not exit')), timeout);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal);
    });
  });
}

/** End `child` (if it still runs) and wait for it, bounded. */
async function killListener(child) {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exitOf(child, 10000);
  }
}

module.exports = {
  BACKENDS,
  EXECUTABLE,
  PYTHON,
  TIMEOUT,
  blankLineOf,
  collect,
  disconnect,
  exitOf,
  killListener,
  lineOf,
  program,
  scopeVariables,
  startClient,
  startListener,
  startSession,
  stopClient,
  topFrame,
};
