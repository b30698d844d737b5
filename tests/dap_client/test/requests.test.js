// The rest of the requests and events of issue 6, in both backends (the
// program in a child process, and `"inProcess": true`): launch by module
// with args, cwd and env; conditions, hit counts and logpoints; stack
// paging; evaluate in each context; cancel; continued, process and output
// events; the "uncaught" filter; disconnect with terminateDebuggee; and a
// breakpoint set on entry in a function that is not defined yet.
'use strict';

const assert = require('assert');
const path = require('path');
const {
  BACKENDS,
  collect,
  disconnect,
  lineOf,
  program,
  scopeVariables,
  startClient,
  startSession,
  stopClient,
  topFrame,
} = require('./helpers');

const SMOKE = program('smoke.py');
const LOOPS = program('loops.py');
const PLAIN = program('plain.py');
const CRASH = program('crash.py');
const ARGS_ENV = program('args_env.py');
const INTERLEAVED = program('interleaved.py');
const PROGRAMS = path.dirname(ARGS_ENV);

for (const backend of BACKENDS) {
  describe(`dapper-trio dap, more requests (${backend.name})`, function () {
    let dc;

    beforeEach(async function () {
      dc = await startClient();
    });

    afterEach(function () {
      return stopClient(dc);
    });

    function launch(args, configure, expectStop = true) {
      return startSession(dc, 'launch', { ...args, ...backend.launch }, configure, expectStop);
    }

    /** Launch loops.py with a breakpoint in helper; the stopped event. */
    function stopInHelper() {
      return launch({ program: LOOPS }, (c) =>
        c.setBreakpointsRequest({
          source: { path: LOOPS },
          breakpoints: [{ line: lineOf(LOOPS, 'helper') }],
        }),
      );
    }

    it('launches a module with args, cwd and env: process, output and exited events', async function () {
      const processEvent = dc.waitForEvent('process');
      const output = collect(dc, 'output');
      const exited = dc.waitForEvent('exited');
      const terminated = dc.waitForEvent('terminated');
      await launch(
        {
          module: 'args_env',
          args: ['one', 'two words'],
          cwd: PROGRAMS,
          env: { DAPPER_TRIO_TEST_VALUE: 'from the client' },
        },
        null,
        false,
      );
      const started = (await processEvent).body;
      assert.strictEqual(started.startMethod, 'launch');
      assert.strictEqual(typeof started.systemProcessId, 'number');
      assert.strictEqual((await exited).body.exitCode, 0);
      await terminated;
      const text = (category) =>
        output.filter((e) => e.body.category === category).map((e) => e.body.output).join('');
      assert.deepStrictEqual(JSON.parse(text('stdout')), {
        argv: ['one', 'two words'],
        cwd: PROGRAMS,
        value: 'from the client',
        name: '__main__',
      });
      assert.strictEqual(text('stderr'), 'args_env: done\n');
    });

    it('decides stops by condition and hit count, and logs a logpoint', async function () {
      const loop = lineOf(LOOPS, 'loop');
      const output = collect(dc, 'output');
      let answer;
      const stopped = await launch({ program: LOOPS }, async (c) => {
        answer = await c.setBreakpointsRequest({
          source: { path: LOOPS },
          breakpoints: [
            { line: lineOf(LOOPS, 'helper'), logMessage: 'helper x={x}' },
            { line: loop, condition: 'i >= 1', hitCondition: '2' },
          ],
        });
      });
      assert.deepStrictEqual(answer.body.breakpoints.map((b) => b.verified), [true, true]);
      const logged = output.filter((e) => e.body.category === 'console').map((e) => e.body.output);
      assert.deepStrictEqual(logged, ['helper x=3\n']);
      assert.strictEqual(stopped.body.reason, 'breakpoint');
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.strictEqual(frame.line, loop);
      const i = (await scopeVariables(dc, frame.id)).variables.find((v) => v.name === 'i');
      assert.strictEqual(i.value, '2'); // the second pass where i >= 1
      const [, exited] = await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 0);
    });

    it('pages a stack with startFrame and levels', async function () {
      const stopped = await stopInHelper();
      const threadId = stopped.body.threadId;
      const all = (await dc.stackTraceRequest({ threadId })).body;
      assert.deepStrictEqual(all.stackFrames.map((f) => f.name).slice(0, 2), ['helper', 'main']);
      const first = (await dc.stackTraceRequest({ threadId, levels: 1 })).body;
      assert.deepStrictEqual(first.stackFrames.map((f) => f.name), ['helper']);
      assert.strictEqual(first.totalFrames, all.stackFrames.length);
      const second = (await dc.stackTraceRequest({ threadId, startFrame: 1, levels: 1 })).body;
      assert.deepStrictEqual(second.stackFrames.map((f) => [f.name, f.line]), [
        ['main', lineOf(LOOPS, 'call')],
      ]);
      assert.strictEqual(second.totalFrames, all.stackFrames.length);
    });

    it('evaluates for the repl (statements too), watches and hovers', async function () {
      const stopped = await stopInHelper();
      const frame = await topFrame(dc, stopped.body.threadId);
      const hover = await dc.evaluateRequest({ expression: 'x', frameId: frame.id, context: 'hover' });
      assert.strictEqual(hover.body.result, '3');
      const statement = await dc.evaluateRequest({
        expression: 'extra = x + 100',
        frameId: frame.id,
        context: 'repl',
      });
      assert.strictEqual(statement.body.result, '');
      const repl = await dc.evaluateRequest({ expression: 'extra * 2', frameId: frame.id, context: 'repl' });
      assert.strictEqual(repl.body.result, '206');
      const watch = await dc.evaluateRequest({
        expression: '[x, extra]',
        frameId: frame.id,
        context: 'watch',
      });
      assert.strictEqual(watch.body.result, '[3, 103]');
      assert.ok(watch.body.variablesReference > 0);
      await assert.rejects(
        dc.evaluateRequest({ expression: 'y = 1', frameId: frame.id, context: 'watch' }),
        /SyntaxError|invalid syntax/,
      );
      await assert.rejects(
        dc.evaluateRequest({ expression: 'nowhere', frameId: frame.id, context: 'hover' }),
        /NameError: name 'nowhere' is not defined/,
      );
    });

    it('cancels a slow evaluate; threads is answered meanwhile', async function () {
      const stopped = await stopInHelper();
      const frame = await topFrame(dc, stopped.body.threadId);
      const slowSeq = dc.sequence; // the seq DebugClient gives the next request
      const slow = dc.evaluateRequest({
        expression: "__import__('time').sleep(20)",
        frameId: frame.id,
        context: 'repl',
      });
      const started = Date.now();
      const threads = await dc.threadsRequest();
      assert.ok(threads.body.threads.some((t) => t.name === 'helper' || t.name === '__main__.main'));
      await dc.customRequest('cancel', { requestId: slowSeq });
      await assert.rejects(slow, /cancelled/);
      assert.ok(Date.now() - started < 10000, 'the slow evaluate was not cancelled');
    });

    it('sends continued on continue, and stopped with reason step on stepIn and stepOut', async function () {
      const stopped = await launch({ program: LOOPS }, (c) =>
        c.setBreakpointsRequest({ source: { path: LOOPS }, breakpoints: [{ line: lineOf(LOOPS, 'call') }] }),
      );
      const threadId = stopped.body.threadId;
      const [, stepIn] = await Promise.all([dc.stepInRequest({ threadId }), dc.waitForEvent('stopped')]);
      assert.deepStrictEqual([stepIn.body.reason, stepIn.body.threadId], ['step', threadId]);
      const [, stepOut] = await Promise.all([dc.stepOutRequest({ threadId }), dc.waitForEvent('stopped')]);
      assert.deepStrictEqual([stepOut.body.reason, stepOut.body.threadId], ['step', threadId]);
      const [response, continued] = await Promise.all([
        dc.continueRequest({ threadId }),
        dc.waitForEvent('continued'),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(response.body.allThreadsContinued, true);
      assert.strictEqual(continued.body.threadId, threadId);
      assert.strictEqual(continued.body.allThreadsContinued, true);
    });

    it('gives stdout and stderr as output events, in order', async function () {
      const output = collect(dc, 'output');
      const exited = dc.waitForEvent('exited');
      await launch({ program: PLAIN }, null, false);
      assert.strictEqual((await exited).body.exitCode, 3);
      // (A print may come as more than one event: its text, then its newline.)
      const program = output.filter((e) => e.body.category !== 'console');
      const text = (category) =>
        program.filter((e) => e.body.category === category).map((e) => e.body.output).join('');
      assert.strictEqual(text('stdout'), 'first: stdout\nthird: stdout\n');
      assert.strictEqual(text('stderr'), 'second: stderr\n');
      // One stream of events in the program's order, in both backends (a
      // child process's sys.stdout and sys.stderr come over its connection
      // to the adapter, not through two pipes read side by side).
      const at = (words) => program.findIndex((e) => e.body.output.includes(words));
      assert.ok(at('first') < at('second') && at('second') < at('third'), JSON.stringify(program));
    });

    it('keeps the order of many interleaved stdout and stderr lines', async function () {
      const output = collect(dc, 'output');
      const exited = dc.waitForEvent('exited');
      await launch({ program: INTERLEAVED }, null, false);
      assert.strictEqual((await exited).body.exitCode, 0);
      // Split the events into lines, each with its category.
      const lines = [];
      for (const event of output.filter((e) => e.body.category !== 'console')) {
        for (const piece of event.body.output.split(/(?<=\n)/)) {
          const last = lines[lines.length - 1];
          if (last && last.category === event.body.category && !last.text.endsWith('\n')) {
            last.text += piece;
          } else if (piece) {
            lines.push({ category: event.body.category, text: piece });
          }
        }
      }
      const expected = [];
      for (let i = 0; i < 100; i++) {
        expected.push({ category: 'stdout', text: `out ${i}\n` }, { category: 'stderr', text: `err ${i}\n` });
      }
      expected.push({ category: 'stdout', text: 'done\n' });
      assert.deepStrictEqual(lines, expected);
    });

    it('stops for an uncaught exception with filter "uncaught" only', async function () {
      let answer;
      const stopped = await launch({ program: CRASH }, async (c) => {
        answer = await c.setExceptionBreakpointsRequest({ filters: ['uncaught'] });
      });
      assert.deepStrictEqual(answer.body.breakpoints.map((b) => b.verified), [true]);
      assert.strictEqual(stopped.body.reason, 'exception');
      assert.match(stopped.body.text, /ValueError: boom/);
      const info = await dc.exceptionInfoRequest({ threadId: stopped.body.threadId });
      assert.strictEqual(info.body.breakMode, 'unhandled');
      assert.match(JSON.stringify(info.body.details), /in doomed/);
      const [, exited] = await Promise.all([
        dc.continueRequest({ threadId: stopped.body.threadId }),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 1);
    });

    it('ends a stopped program on disconnect with terminateDebuggee', async function () {
      const stopped = await stopInHelper();
      assert.strictEqual(stopped.body.reason, 'breakpoint');
      const [, exited] = await Promise.all([
        disconnect(dc, { terminateDebuggee: true }),
        dc.waitForEvent('exited'),
      ]);
      assert.strictEqual(exited.body.exitCode, 1); // the debugger quit
    });

    it('stops on entry, then at a breakpoint set in a function not defined yet', async function () {
      const line = lineOf(SMOKE, 'breakpoint');
      const entry = await launch({ program: SMOKE, stopOnEntry: true }, null);
      assert.strictEqual(entry.body.reason, 'entry');
      assert.strictEqual((await topFrame(dc, entry.body.threadId)).line, 1);
      const set = await dc.setBreakpointsRequest({ source: { path: SMOKE }, breakpoints: [{ line }] });
      assert.strictEqual(set.body.breakpoints[0].verified, true);
      const [, stopped] = await Promise.all([
        dc.continueRequest({ threadId: entry.body.threadId }),
        dc.waitForEvent('stopped'),
      ]);
      assert.strictEqual(stopped.body.reason, 'breakpoint');
      const frame = await topFrame(dc, stopped.body.threadId);
      assert.deepStrictEqual([frame.name, frame.line], ['worker', line]);
    });
  });
}
