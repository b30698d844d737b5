// dapper-trio's DAP adapter driven by Microsoft's DebugClient (a client
// nobody on this project wrote), over the adapter's stdin and stdout: every
// request and event on a launched program, in both backends (the program in
// a child process, and `"inProcess": true`).
'use strict';

const assert = require('assert');
const {
  BACKENDS,
  blankLineOf,
  collect,
  lineOf,
  program,
  scopeVariables,
  startClient,
  startSession,
  topFrame,
} = require('./helpers');

const SMOKE = program('smoke.py');
const IDLE = program('idle.py');
const LOOPS = program('loops.py');
const PLAIN = program('plain.py');
const PLAIN_FUNCS = program('plain_funcs.py');
const GROUPS = program('groups.py');
const PLAIN_CRASH = program('plain_crash.py');

describe('dapper-trio dap', function () {
  let dc;

  beforeEach(async function () {
    dc = await startClient();
  });

  afterEach(function () {
    return dc.stop();
  });

  it('advertises exactly what it implements in initialize', async function () {
    const body = (await dc.initializeRequest()).body;
    for (const implemented of [
      'supportsConfigurationDoneRequest',
      'supportsFunctionBreakpoints',
      'supportsConditionalBreakpoints',
      'supportsHitConditionalBreakpoints',
      'supportsLogPoints',
      'supportsEvaluateForHovers',
      'supportsSetVariable',
      'supportsCompletionsRequest',
      'supportsExceptionInfoRequest',
      'supportsLoadedSourcesRequest',
      'supportsDelayedStackTraceLoading',
      'supportsTerminateRequest',
      'supportTerminateDebuggee',
      'supportsCancelRequest',
    ]) {
      assert.strictEqual(body[implemented], true, `${implemented} is not advertised`);
    }
    assert.deepStrictEqual(
      body.exceptionBreakpointFilters.map((f) => [f.filter, f.default]),
      [['raised', false], ['uncaught', true], ['userUnhandled', false]],
    );
    for (const missing of [
      'supportsStepBack',
      'supportsRestartRequest',
      'supportsGotoTargetsRequest',
      'supportsStepInTargetsRequest',
      'supportsModulesRequest',
      'supportsDataBreakpoints',
      'supportsExceptionOptions',
      'supportsExceptionFilterOptions',
      'supportsSetExpression',
      'supportsValueFormattingOptions',
      'supportsBreakpointLocationsRequest',
      'supportsTerminateThreadsRequest',
    ]) {
      assert.ok(!body[missing], `${missing} is advertised but not implemented`);
    }
  });

  it('reports a breakpoint on a blank line as unverified', async function () {
    await dc.initializeRequest();
    const response = await dc.setBreakpointsRequest({
      source: { path: SMOKE },
      breakpoints: [{ line: blankLineOf(SMOKE) }, { line: lineOf(SMOKE, 'breakpoint') }],
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
      dc.launchRequest({ program: program('missing.py') }),
      /does not exist/,
    );
    await assert.rejects(
      dc.launchRequest({ program: SMOKE, inProcess: true, python: 'python3' }),
      /'python' cannot be used with 'inProcess'/,
    );
    await assert.rejects(
      dc.launchRequest({ program: SMOKE, ipcTransport: 'pigeon' }),
      /'ipcTransport' must be "unix" or "tcp"/,
    );
    await assert.rejects(dc.stackTraceRequest({}), /missing argument 'threadId'/);
    await assert.rejects(
      dc.setFunctionBreakpointsRequest({ breakpoints: [{ condition: 'x' }] }),
      /each breakpoint needs a non-empty 'name'/,
    );
    await assert.rejects(
      dc.setExceptionBreakpointsRequest({ filters: 'raised' }),
      /argument 'filters' must be an array, not a string/,
    );
    await assert.rejects(dc.exceptionInfoRequest({}), /missing argument 'threadId'/);
    await assert.rejects(
      dc.setVariableRequest({ variablesReference: 1, name: 'x' }),
      /missing argument 'value'/,
    );
    await assert.rejects(dc.completionsRequest({ text: 'x' }), /missing argument 'column'/);
    await assert.rejects(dc.sourceRequest({ sourceReference: 0 }), /give a 'sourceReference'/);
    await assert.rejects(dc.attachRequest({ port: 9 }), /missing argument 'token'/);
    await assert.rejects(
      dc.exceptionInfoRequest({ threadId: 1 }),
      /no program is running \(send launch or attach first\)/,
    );
    const threads = await dc.threadsRequest();
    assert.deepStrictEqual(threads.body.threads, []);
    const sources = await dc.customRequest('loadedSources', {});
    assert.deepStrictEqual(sources.body.sources, []);
  });

  it('launches over a TCP socket with ipcTransport "tcp"', async function () {
    const line = lineOf(SMOKE, 'breakpoint');
    const stopped = await startSession(dc, 'launch', { program: SMOKE, ipcTransport: 'tcp' }, (c) =>
      c.setBreakpointsRequest({ source: { path: SMOKE }, breakpoints: [{ line }] }),
    );
    assert.strictEqual((await topFrame(dc, stopped.body.threadId)).line, line);
  });
});

for (const backend of BACKENDS) {
  describe(`dapper-trio dap, launch (${backend.name})`, function () {
    let dc;

    beforeEach(async function () {
      dc = await startClient();
    });

    afterEach(function () {
      return dc.stop();
    });

    /** Launch `file` with `configure`; the first stopped event. */
    function launch(file, configure, extra = {}) {
      return startSession(dc, 'launch', { program: file, ...backend.launch, ...extra }, configure);
    }

    /** Launch smoke.py and stop at its breakpoint in the `worker` task. */
    async function stopInWorker() {
      const line = lineOf(SMOKE, 'breakpoint');
      const stopped = await launch(SMOKE, (c) =>
        c.setBreakpointsRequest({ source: { path: SMOKE }, breakpoints: [{ line }] }),
      );
      const threads = await dc.threadsRequest();
      const worker = threads.body.threads.find((thread) => thread.name === 'worker');
      assert.ok(worker, `no thread named worker in ${JSON.stringify(threads.body)}`);
      assert.strictEqual(stopped.body.threadId, worker.id);
      const frame = await topFrame(dc, worker.id);
      return { line, stopped, worker, frame };
    }

    it('stops at a breakpoint in a trio task, whose thread is named after it', async function () {
      const { line, stopped, frame } = await stopInWorker();
      assert.strictEqual(stopped.body.reason, 'breakpoint');
      assert.strictEqual(stopped.body.allThreadsStopped, true);
      assert.deepStrictEqual(stopped.body.hitBreakpointIds, [1]);
      assert.strictEqual(frame.line, line);
      assert.strictEqual(frame.name, 'worker');
      assert.strictEqual(frame.source.path, SMOKE);
      const names = (await dc.threadsRequest()).body.threads.map((thread) => thread.name);
      assert.deepStrictEqual(names, ['__main__.main', 'worker']);
    });

    it('gives another task its await chain', async function () {
      await stopInWorker();
      const main = (await dc.threadsRequest()).body.threads.find(
        (thread) => thread.name === '__main__.main',
      );
      assert.strictEqual((await topFrame(dc, main.id)).name, 'main');
    });

    it('shows a local and its items in variables, and the Trio scope', async function () {
      const { frame } = await stopInWorker();
      const scopes = await dc.scopesRequest({ frameId: frame.id });
      assert.deepStrictEqual(scopes.body.scopes.map((s) => s.name), ['Locals', 'Globals', 'Trio']);
      const { variables } = await scopeVariables(dc, frame.id);
      const numbers = variables.find((v) => v.name === 'numbers');
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
      const trio = await scopeVariables(dc, frame.id, 'Trio');
      assert.match(trio.variables[0].value, /^t\d+ worker$/);
    });

    it('evaluates an expression in the stopped frame', async function () {
      const { frame } = await stopInWorker();
      const result = await dc.evaluateRequest({
        expression: 'sum(numbers) * 2',
        frameId: frame.id,
        context: 'watch',
      });
      assert.strictEqual(result.body.result, '12');
    });

    it('sets a local of a coroutine, an item of a list and a global', async function () {
      const { worker, frame } = await stopInWorker();
      const locals = await scopeVariables(dc, frame.id);
      const numbers = locals.variables.find((v) => v.name === 'numbers');
      const item = await dc.setVariableRequest({
        variablesReference: numbers.variablesReference,
        name: '0',
        value: '10 * 10',
      });
      assert.strictEqual(item.body.value, '100');
      const replaced = await dc.setVariableRequest({
        variablesReference: locals.reference,
        name: 'numbers',
        value: '[7, 8]',
      });
      assert.strictEqual(replaced.body.value, '[7, 8]');
      assert.ok(replaced.body.variablesReference > 0);
      const globals = await scopeVariables(dc, frame.id, 'Globals');
      await dc.setVariableRequest({
        variablesReference: globals.reference,
        name: '__doc__',
        value: '"changed"',
      });
      // The new local is what the program goes on with.
      await Promise.all([dc.nextRequest({ threadId: worker.id }), dc.waitForEvent('stopped')]);
      const after = await topFrame(dc, worker.id);
      const total = await dc.evaluateRequest({ expression: 'total', frameId: after.id });
      assert.strictEqual(total.body.result, '15');
      const doc = await dc.evaluateRequest({ expression: '__doc__', frameId: after.id });
      assert.strictEqual(doc.body.result, "'changed'");
    });

    it('refuses to set what cannot be set', async function () {
      const { frame } = await stopInWorker();
      const trio = await scopeVariables(dc, frame.id, 'Trio');
      await assert.rejects(
        dc.setVariableRequest({ variablesReference: trio.reference, name: 'task', value: '1' }),
        /cannot be set/,
      );
      const locals = await scopeVariables(dc, frame.id);
      await assert.rejects(
        dc.setVariableRequest({ variablesReference: locals.reference, name: 'numbers', value: '1 +' }),
        /SyntaxError/,
      );
      await assert.rejects(
        dc.setVariableRequest({ variablesReference: locals.reference, name: 'nope', value: '1' }),
        /no variable 'nope'/,
      );
    });

    it('completes names and attributes in the stopped frame', async function () {
      const { frame } = await stopInWorker();
      const names = await dc.completionsRequest({ text: 'num', column: 4, frameId: frame.id });
      const numbers = names.body.targets.find((t) => t.label === 'numbers');
      assert.deepStrictEqual([numbers.start, numbers.length, numbers.type], [1, 3, 'variable']);
      const attributes = await dc.completionsRequest({
        text: 'x = numbers.ap',
        column: 15,
        frameId: frame.id,
      });
      assert.deepStrictEqual(attributes.body.targets.map((t) => t.label), ['append']);
      assert.strictEqual(attributes.body.targets[0].start, 13);
    });

    it('lists the loaded sources, and reads one by path', async function () {
      await stopInWorker();
      const sources = await dc.customRequest('loadedSources', {});
      const paths = sources.body.sources.map((s) => s.path);
      assert.ok(paths.includes(SMOKE), `${SMOKE} not in ${paths.length} sources`);
      assert.ok(paths.some((p) => /trio[/\\]_core[/\\]_run\.py$/.test(p)));
      const own = paths.filter((p) => /[/\\]dapper_trio[/\\]/.test(p));
      assert.deepStrictEqual(own, [], 'dapper-trio itself is listed');
      const text = await dc.sourceRequest({ source: { path: SMOKE }, sourceReference: 0 });
      assert.match(text.body.content, /# mark: breakpoint/);
    });

    it('steps with next within the same task', async function () {
      const { line, worker } = await stopInWorker();
      const [, stopped] = await Promise.all([
        dc.nextRequest({ threadId: worker.id }),
        dc.waitForEvent('stopped'),
      ]);
      assert.strictEqual(stopped.body.reason, 'step');
      assert.strictEqual(stopped.body.threadId, worker.id);
      assert.strictEqual((await topFrame(dc, worker.id)).line, line + 1);
    });

    it('steps in and out of an awaited coroutine', async function () {
      const stopped = await launch(LOOPS, (c) =>
        c.setBreakpointsRequest({ source: { path: LOOPS }, breakpoints: [{ line: lineOf(LOOPS, 'call') }] }),
      );
      const threadId = stopped.body.threadId;
      await Promise.all([dc.stepInRequest({ threadId }), dc.waitForEvent('stopped')]);
      assert.strictEqual((await topFrame(dc, threadId)).name, 'helper');
      await Promise.all([dc.stepOutRequest({ threadId }), dc.waitForEvent('stopped')]);
      await Promise.all([dc.nextRequest({ threadId }), dc.waitForEvent('stopped')]);
      const top = await topFrame(dc, threadId);
      assert.deepStrictEqual([top.name, top.line], ['main', lineOf(LOOPS, 'after')]);
    });

    it('continues to the end: output, thread events, exited and terminated', async function () {
      const threadEvents = collect(dc, 'thread');
      const { worker } = await stopInWorker();
      const [, output, exited] = await Promise.all([
        dc.continueRequest({ threadId: worker.id }),
        dc.assertOutput('stdout', 'smoke: done\n'),
        dc.waitForEvent('exited'),
        dc.waitForEvent('terminated'),
      ]);
      assert.ok(output);
      assert.strictEqual(exited.body.exitCode, 0);
      assert.deepStrictEqual(
        threadEvents.map((e) => [e.body.reason, e.body.threadId]),
        [['started', 1], ['started', 2], ['exited', 2], ['exited', 1]],
      );
    });

    it('pauses a program idle in trio.sleep', async function () {
      await Promise.all([
        startSession(dc, 'launch', { program: IDLE, ...backend.launch }, null, false),
        dc.assertOutput('stdout', 'idle: ready\n'),
      ]);
      const [, stopped] = await Promise.all([
        dc.pauseRequest({ threadId: 1 }),
        dc.waitForEvent('stopped'),
      ]);
      assert.strictEqual(stopped.body.reason, 'pause');
      const threads = await dc.threadsRequest();
      const thread = threads.body.threads.find((t) => t.id === stopped.body.threadId);
      assert.strictEqual(thread.name, '__main__.main');
      assert.strictEqual((await topFrame(dc, stopped.body.threadId)).line, lineOf(IDLE, 'sleep'));
    });

    it('terminates a running program: its finally blocks run', async function () {
      await Promise.all([
        startSession(dc, 'launch', { program: IDLE, ...backend.launch }, null, false),
        dc.assertOutput('stdout', 'idle: ready\n'),
      ]);
      const [, exited] = await Promise.all([
        dc.terminateRequest(),
        dc.waitForEvent('exited'),
        dc.waitForEvent('terminated'),
      ]);
      assert.strictEqual(exited.body.exitCode, 1); // the debugger quit
    });

    it('stops at a function breakpoint in a trio task', async function () {
      let answer;
      const stopped = await launch(SMOKE, async (c) => {
        answer = await c.setFunctionBreakpointsRequest({
          breakpoints: [{ name: 'worker' }, { name: 'no_such_function' }],
        });
      });
      const [found, missing] = answer.body.breakpoints;
      assert.strictEqual(found.verified, true);
      assert.strictEqual(found.source.path, SMOKE);
      assert.strictEqual(missing.verified, false);
      assert.match(missing.message, /no function 'no_such_function' found/);
      assert.strictEqual(stopped.body.reason, 'function breakpoint');
      assert.deepStrictEqual(stopped.body.hitBreakpointIds, [found.id]);
      const threads = (await dc.threadsRequest()).body.threads;
      assert.strictEqual(threads.find((t) => t.id === stopped.body.threadId).name, 'worker');
      assert.strictEqual((await topFrame(dc, stopped.body.threadId)).name, 'worker');
    });

    it('stops at a function breakpoint in a plain program, with its condition', async function () {
      const stopped = await launch(PLAIN_FUNCS, (c) =>
        c.setFunctionBreakpointsRequest({
          breakpoints: [{ name: 'scale', condition: 'factor == 2' }],
        }),
      );
      assert.strictEqual(stopped.body.reason, 'function breakpoint');
      const threads = (await dc.threadsRequest()).body.threads;
      assert.deepStrictEqual(threads, [{ id: stopped.body.threadId, name: backend.mainThread }]);
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.deepStrictEqual([frame.name, frame.line], ['scale', lineOf(PLAIN_FUNCS, 'scale')]);
      const locals = await scopeVariables(dc, frame.id);
      await dc.setVariableRequest({ variablesReference: locals.reference, name: 'factor', value: '10' });
      const completions = await dc.completionsRequest({ text: 'fac', column: 4, frameId: frame.id });
      assert.deepStrictEqual(completions.body.targets.map((t) => t.label), ['factor']);
      const sources = (await dc.customRequest('loadedSources', {})).body.sources;
      assert.ok(sources.some((s) => s.path === PLAIN_FUNCS));
      await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.assertOutput('stdout', 'scaled: [10, 20, 30]\n'),
      ]);
    });

    it('stops where an exception is raised (filter "raised")', async function () {
      const stopped = await launch(PLAIN_FUNCS, (c) =>
        c.setExceptionBreakpointsRequest({ filters: ['raised'] }),
      );
      assert.strictEqual(stopped.body.reason, 'exception');
      assert.match(stopped.body.text, /^ValueError: invalid literal/);
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.deepStrictEqual([frame.name, frame.line], ['risky', lineOf(PLAIN_FUNCS, 'risky')]);
      const info = await dc.exceptionInfoRequest({ threadId: stopped.body.threadId });
      assert.strictEqual(info.body.exceptionId, 'ValueError');
      assert.strictEqual(info.body.breakMode, 'always');
      assert.match(info.body.details.stackTrace, /in risky/);
    });

    it('stops where each trio task raises, never for trio.Cancelled', async function () {
      const stops = [];
      const stopped = await launch(GROUPS, (c) =>
        c.setExceptionBreakpointsRequest({ filters: ['raised'] }),
      );
      let event = stopped;
      for (;;) {
        const frame = await topFrame(dc, event.body.threadId);
        // (On Python 3.10 the group is the backport's: exceptiongroup.ExceptionGroup.)
        stops.push([frame.name, event.body.text.split(':')[0].replace(/^exceptiongroup\./, '')]);
        if (stops.length === 5) {
          break;
        }
        [, event] = await Promise.all([
          dc.continueRequest({ threadId: event.body.threadId }),
          dc.waitForEvent('stopped'),
        ]);
      }
      // Each task: ValueError in parse, KeyError in fail; then the group in main.
      assert.deepStrictEqual(stops.slice(0, 4).map((s) => s.join(' ')).sort(), [
        'fail KeyError',
        'fail KeyError',
        'parse ValueError',
        'parse ValueError',
      ]);
      assert.deepStrictEqual(stops[4], ['main', 'ExceptionGroup']);
    });

    it('stops where an exception escapes a task into trio (filter "userUnhandled")', async function () {
      const stopped = await launch(GROUPS, (c) =>
        c.setExceptionBreakpointsRequest({ filters: ['userUnhandled'] }),
      );
      const threads = (await dc.threadsRequest()).body.threads;
      const task = threads.find((t) => t.id === stopped.body.threadId).name;
      assert.ok(['first', 'second'].includes(task), task);
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.deepStrictEqual([frame.name, frame.line], ['fail', lineOf(GROUPS, 'escape')]);
      const info = await dc.exceptionInfoRequest({ threadId: stopped.body.threadId });
      assert.strictEqual(info.body.exceptionId, 'KeyError');
      assert.strictEqual(info.body.breakMode, 'userUnhandled');
      assert.match(info.body.description, new RegExp(`task '${task}'`));
    });

    it('stops where an exception ends a plain program ("userUnhandled", no "uncaught")', async function () {
      const stopped = await launch(PLAIN_CRASH, (c) =>
        c.setExceptionBreakpointsRequest({ filters: ['userUnhandled'] }),
      );
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.deepStrictEqual([frame.name, frame.line], ['<module>', lineOf(PLAIN_CRASH, 'main')]);
      const info = await dc.exceptionInfoRequest({ threadId: stopped.body.threadId });
      assert.strictEqual(info.body.exceptionId, 'FileNotFoundError');
      assert.strictEqual(info.body.breakMode, 'userUnhandled');
      assert.match(info.body.details.stackTrace, /in load/);
      const [, exited] = await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 1);
    });

    it('describes every leaf of an uncaught ExceptionGroup with its task', async function () {
      const stopped = await launch(GROUPS, null);
      assert.strictEqual(stopped.body.reason, 'exception');
      const info = await dc.exceptionInfoRequest({ threadId: stopped.body.threadId });
      assert.match(info.body.exceptionId, /^(exceptiongroup\.)?ExceptionGroup$/);
      assert.strictEqual(info.body.breakMode, 'unhandled');
      const leaves = info.body.details.innerException;
      assert.deepStrictEqual(
        leaves.map((leaf) => [leaf.typeName, leaf.message.replace(/\(t\d+\)/, '(tN)')]).sort(),
        [
          ['KeyError', "'first'  [task 'first' (tN)]"],
          ['KeyError', "'second'  [task 'second' (tN)]"],
        ],
      );
      assert.match(info.body.description, /task 'first'/);
      assert.match(info.body.description, /task 'second'/);
      for (const leaf of leaves) {
        assert.match(leaf.stackTrace, /in fail/);
      }
      const [, exited] = await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 1);
    });

    it('serves the source of code that has no file', async function () {
      const stopped = await launch(PLAIN_FUNCS, null);
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.strictEqual(frame.name, 'generated');
      assert.strictEqual(frame.source.path, undefined);
      assert.ok(frame.source.sourceReference > 0);
      const text = await dc.sourceRequest({
        source: frame.source,
        sourceReference: frame.source.sourceReference,
      });
      assert.match(text.body.content, /^def generated\(x\):/);
      await assert.rejects(
        dc.sourceRequest({ sourceReference: 9999, source: { sourceReference: 9999 } }),
        /sourceReference 9999 was never given/,
      );
    });

    it('stops a plain program on entry; its output and status follow', async function () {
      const stopped = await launch(PLAIN, null, { stopOnEntry: true });
      assert.strictEqual(stopped.body.reason, 'entry');
      const [, , exited] = await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.assertOutput('stdout', 'first: stdout\nthird: stdout\n'),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 3);
    });
  });
}
