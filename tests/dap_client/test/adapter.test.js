// dapper-trio's DAP adapter driven by Microsoft's DebugClient (a client
// nobody on this project wrote), over the adapter's stdin and stdout.
//
// DAPPER_TRIO_DAP names the `dapper-trio` executable to test (the Python
// test tests/test_dap_client.py sets it to the one of the running venv).
'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const EXECUTABLE = process.env.DAPPER_TRIO_DAP || 'dapper-trio';
const PROGRAMS = path.join(__dirname, '..', 'programs');
const SMOKE = path.join(PROGRAMS, 'smoke.py');
const IDLE = path.join(PROGRAMS, 'idle.py');
// Generous: two shared cores start a Python adapter and a Python debuggee.
const TIMEOUT = 30000;

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

describe('dapper-trio dap', function () {
  let dc;

  beforeEach(function () {
    dc = new DebugClient(EXECUTABLE, 'dap', 'dapper-trio');
    dc.defaultTimeout = TIMEOUT;
    return dc.start();
  });

  afterEach(function () {
    return dc.stop();
  });

  /** Launch smoke.py and stop at its breakpoint in the `worker` task. */
  async function stopInWorker() {
    const line = lineOf(SMOKE, 'breakpoint');
    const [, , stack] = await dc.hitBreakpoint(
      { program: SMOKE },
      { path: SMOKE, line },
    );
    const threads = await dc.threadsRequest();
    const worker = threads.body.threads.find((thread) => thread.name === 'worker');
    assert.ok(worker, `no thread named worker in ${JSON.stringify(threads.body)}`);
    return { line, stack, worker };
  }

  it('advertises exactly what it implements in initialize', async function () {
    const response = await dc.initializeRequest();
    const body = response.body;
    assert.strictEqual(body.supportsConfigurationDoneRequest, true);
    assert.strictEqual(body.supportsConditionalBreakpoints, true);
    assert.strictEqual(body.supportsHitConditionalBreakpoints, true);
    assert.strictEqual(body.supportsLogPoints, true);
    assert.strictEqual(body.supportsTerminateRequest, true);
    assert.strictEqual(body.supportsCancelRequest, true);
    assert.deepStrictEqual(
      body.exceptionBreakpointFilters.map((f) => f.filter),
      ['uncaught'],
    );
    for (const missing of ['supportsSetVariable', 'supportsStepBack', 'supportsRestartRequest']) {
      assert.ok(!body[missing], `${missing} is advertised but not implemented`);
    }
  });

  it('stops at a breakpoint in a trio task, whose thread is named after it', async function () {
    const { line, stack, worker } = await stopInWorker();
    assert.strictEqual(stack.body.stackFrames[0].line, line);
    const threads = await dc.threadsRequest();
    const names = threads.body.threads.map((thread) => thread.name);
    assert.ok(names.includes('__main__.main'), `threads: ${names}`);
    assert.ok(worker.id !== undefined);
  });

  it('gives the stopped task its own stack', async function () {
    const { line, worker } = await stopInWorker();
    const stack = await dc.stackTraceRequest({ threadId: worker.id });
    const top = stack.body.stackFrames[0];
    assert.strictEqual(top.name, 'worker');
    assert.strictEqual(top.line, line);
    assert.strictEqual(top.source.path, SMOKE);
    const main = (await dc.threadsRequest()).body.threads.find(
      (thread) => thread.name === '__main__.main',
    );
    const mainStack = await dc.stackTraceRequest({ threadId: main.id });
    assert.strictEqual(mainStack.body.stackFrames[0].name, 'main');
  });

  it('shows a local and its items in variables', async function () {
    const { worker } = await stopInWorker();
    const stack = await dc.stackTraceRequest({ threadId: worker.id });
    const scopes = await dc.scopesRequest({ frameId: stack.body.stackFrames[0].id });
    const names = scopes.body.scopes.map((scope) => scope.name);
    assert.deepStrictEqual(names, ['Locals', 'Globals', 'Trio']);
    const locals = await dc.variablesRequest({
      variablesReference: scopes.body.scopes[0].variablesReference,
    });
    const numbers = locals.body.variables.find((v) => v.name === 'numbers');
    assert.strictEqual(numbers.value, '[1, 2, 3]');
    assert.strictEqual(numbers.evaluateName, 'numbers');
    const items = await dc.variablesRequest({
      variablesReference: numbers.variablesReference,
      start: 1,
      count: 2,
    });
    assert.deepStrictEqual(
      items.body.variables.map((v) => [v.name, v.value, v.evaluateName]),
      [['1', '2', 'numbers[1]'], ['2', '3', 'numbers[2]']],
    );
  });

  it('evaluates an expression in the stopped frame', async function () {
    const { worker } = await stopInWorker();
    const stack = await dc.stackTraceRequest({ threadId: worker.id });
    const result = await dc.evaluateRequest({
      expression: 'sum(numbers) * 2',
      frameId: stack.body.stackFrames[0].id,
      context: 'watch',
    });
    assert.strictEqual(result.body.result, '12');
  });

  it('steps with next within the same task', async function () {
    const { line, worker } = await stopInWorker();
    const [, stopped] = await Promise.all([
      dc.nextRequest({ threadId: worker.id }),
      dc.waitForEvent('stopped'),
    ]);
    assert.strictEqual(stopped.body.reason, 'step');
    assert.strictEqual(stopped.body.threadId, worker.id);
    const stack = await dc.stackTraceRequest({ threadId: worker.id });
    assert.strictEqual(stack.body.stackFrames[0].line, line + 1);
  });

  it('continues to the end: output, exited and terminated', async function () {
    const { worker } = await stopInWorker();
    const [, output, exited] = await Promise.all([
      dc.continueRequest({ threadId: worker.id }),
      dc.assertOutput('stdout', 'smoke: done\n'),
      dc.waitForEvent('exited'),
      dc.waitForEvent('terminated'),
    ]);
    assert.ok(output);
    assert.strictEqual(exited.body.exitCode, 0);
  });

  it('reports a breakpoint on a blank line as unverified', async function () {
    await dc.initializeRequest();
    const line = blankLineOf(SMOKE);
    const response = await dc.setBreakpointsRequest({
      source: { path: SMOKE },
      breakpoints: [{ line }, { line: lineOf(SMOKE, 'breakpoint') }],
    });
    const [blank, code] = response.body.breakpoints;
    assert.strictEqual(blank.verified, false);
    assert.match(blank.message, /holds no code/);
    assert.strictEqual(code.verified, true);
  });

  it('answers bad requests with errors and keeps serving', async function () {
    await dc.initializeRequest();
    await assert.rejects(dc.customRequest('noSuchCommand', {}), /unknown command 'noSuchCommand'/);
    await assert.rejects(
      dc.launchRequest({ program: 42 }),
      /argument 'program' must be a string, not a number/,
    );
    await assert.rejects(
      dc.launchRequest({ program: path.join(PROGRAMS, 'missing.py') }),
      /does not exist/,
    );
    await assert.rejects(dc.stackTraceRequest({}), /missing argument 'threadId'/);
    const threads = await dc.threadsRequest();
    assert.deepStrictEqual(threads.body.threads, []);
  });

  it('pauses a program idle in trio.sleep', async function () {
    await Promise.all([
      dc.configurationSequence(),
      dc.launch({ program: IDLE }),
      dc.assertOutput('stdout', 'idle: ready\n'),
    ]);
    const [, stopped] = await Promise.all([
      dc.pauseRequest({ threadId: 1 }),
      dc.waitForEvent('stopped'),
    ]);
    assert.strictEqual(stopped.body.reason, 'pause');
    assert.strictEqual(stopped.body.allThreadsStopped, true);
    const threads = await dc.threadsRequest();
    const thread = threads.body.threads.find((t) => t.id === stopped.body.threadId);
    assert.strictEqual(thread.name, '__main__.main');
    const stack = await dc.stackTraceRequest({ threadId: stopped.body.threadId });
    assert.strictEqual(stack.body.stackFrames[0].line, lineOf(IDLE, 'sleep'));
  });
});
