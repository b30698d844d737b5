// `attach`, driven by Microsoft's DebugClient: to a trio program that called
// `await dapper_trio.listen()`, and to one started with
// `dapper-trio run --listen`.  Each test starts the program itself and ends
// it (bounded) afterwards.
'use strict';

const assert = require('assert');
const {
  EXECUTABLE,
  PYTHON,
  disconnect,
  exitOf,
  killListener,
  lineOf,
  program,
  startClient,
  startListener,
  startSession,
  stopClient,
  topFrame,
} = require('./helpers');

const LISTENER = program('listener.py');
const SMOKE = program('smoke.py');
const IDLE = program('idle.py');
const TICK = lineOf(LISTENER, 'tick');

describe('dapper-trio dap, attach to dapper_trio.listen()', function () {
  let listener;
  let clients;

  beforeEach(async function () {
    clients = [];
    listener = await startListener(PYTHON, [LISTENER]);
  });

  afterEach(async function () {
    for (const dc of clients) {
      await stopClient(dc);
    }
    await killListener(listener.child);
  });

  async function client() {
    const dc = await startClient();
    clients.push(dc);
    return dc;
  }

  /** Attach with a breakpoint on the ticker's loop; the stopped event. */
  function attachAtTick(dc) {
    return startSession(dc, 'attach', listener.args, (c) =>
      c.setBreakpointsRequest({ source: { path: LISTENER }, breakpoints: [{ line: TICK }] }),
    );
  }

  it('refuses a wrong token, then serves the right one', async function () {
    const dc = await client();
    await dc.initializeRequest();
    await assert.rejects(
      dc.attachRequest({ address: listener.args.address, token: '0'.repeat(64) }),
      /refused the connection: authentication failed: wrong token/,
    );
    await assert.rejects(
      dc.attachRequest({ address: 'tcp:127.0.0.1:1', token: listener.args.token }),
      /attach: cannot reach tcp:127\.0\.0\.1:1/,
    );
    await assert.rejects(dc.attachRequest({ address: 'nowhere', token: 'x' }), /not a dapper-trio address/);
    const stopped = await Promise.all([
      dc.waitForEvent('stopped'),
      dc.waitForEvent('initialized').then(async () => {
        await dc.setBreakpointsRequest({ source: { path: LISTENER }, breakpoints: [{ line: TICK }] });
        await dc.configurationDoneRequest();
      }),
      dc.attachRequest(listener.args),
    ]).then(([event]) => event);
    assert.strictEqual(stopped.body.reason, 'breakpoint');
  });

  it('stops in a task that was running before the client came', async function () {
    const dc = await client();
    const processEvent = dc.waitForEvent('process');
    const stopped = await attachAtTick(dc);
    assert.strictEqual((await processEvent).body.startMethod, 'attach');
    const threads = (await dc.threadsRequest()).body.threads;
    assert.deepStrictEqual(threads.map((t) => t.name), ['__main__.main', 'ticker']);
    assert.strictEqual(threads.find((t) => t.id === stopped.body.threadId).name, 'ticker');
    const frame = await topFrame(dc, stopped.body.threadId);
    assert.deepStrictEqual([frame.name, frame.line], ['ticker', TICK]);
    const count = await dc.evaluateRequest({ expression: 'count >= 0', frameId: frame.id });
    assert.strictEqual(count.body.result, 'True');
    const [, again] = await Promise.all([
      dc.continueRequest({ threadId: stopped.body.threadId }),
      dc.waitForEvent('stopped'),
    ]);
    assert.strictEqual(again.body.threadId, stopped.body.threadId);
  });

  it('detaches on disconnect: the program goes on, and takes the next client', async function () {
    const first = await client();
    const stopped = await attachAtTick(first);
    await disconnect(first, {});
    // Still running, without the first client's breakpoint: pause to see it.
    const second = await client();
    await startSession(second, 'attach', listener.args, null, false);
    const [, paused] = await Promise.all([
      second.pauseRequest({ threadId: stopped.body.threadId }),
      second.waitForEvent('stopped'),
    ]);
    assert.strictEqual(paused.body.reason, 'pause');
    assert.strictEqual(listener.child.exitCode, null);
  });

  it('ends the program on disconnect with terminateDebuggee', async function () {
    const dc = await client();
    await startSession(dc, 'attach', listener.args, null, false);
    await disconnect(dc, { terminateDebuggee: true });
    assert.strictEqual(await exitOf(listener.child), 1); // the debugger quit
  });
});

describe('dapper-trio dap, attach to dapper-trio run --listen', function () {
  let listener;
  let dc;

  beforeEach(async function () {
    dc = await startClient();
  });

  afterEach(async function () {
    await dc.stop();
    await killListener(listener.child);
  });

  it('starts the program once attached and stops at its first line', async function () {
    listener = await startListener(EXECUTABLE, ['run', '--listen', '0', SMOKE]);
    const line = lineOf(SMOKE, 'breakpoint');
    const stopped = await startSession(dc, 'attach', listener.args, (c) =>
      c.setBreakpointsRequest({ source: { path: SMOKE }, breakpoints: [{ line }] }),
    );
    assert.strictEqual(stopped.body.reason, 'entry');
    assert.strictEqual((await topFrame(dc, stopped.body.threadId)).line, 1);
    const [, atBreakpoint] = await Promise.all([
      dc.continueRequest({ threadId: stopped.body.threadId }),
      dc.waitForEvent('stopped'),
    ]);
    const threads = (await dc.threadsRequest()).body.threads;
    assert.strictEqual(threads.find((t) => t.id === atBreakpoint.body.threadId).name, 'worker');
    const [, output, exited] = await Promise.all([
      dc.continueRequest({ threadId: atBreakpoint.body.threadId }),
      exitOf(listener.child),
      dc.waitForEvent('exited'),
    ]);
    assert.strictEqual(output, 0);
    assert.strictEqual(exited.body.exitCode, 0);
  });

  it('runs at once with -c; a client attaches later and pauses it', async function () {
    listener = await startListener(EXECUTABLE, ['run', '--listen', '127.0.0.1:0', '-c', IDLE]);
    await startSession(dc, 'attach', listener.args, null, false);
    const [, paused] = await Promise.all([
      dc.pauseRequest({ threadId: 1 }),
      dc.waitForEvent('stopped'),
    ]);
    assert.strictEqual(paused.body.reason, 'pause');
    assert.strictEqual((await topFrame(dc, paused.body.threadId)).line, lineOf(IDLE, 'sleep'));
    const terminated = dc.waitForEvent('terminated');
    await dc.terminateRequest();
    await terminated;
    assert.strictEqual(await exitOf(listener.child), 1);
  });
});
