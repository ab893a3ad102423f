// Tests of the client against a real `vial serve`. Run them with
// tests/clients/run_client_tests.sh VIAL_BINARY typescript (CTest: ClientsTypeScript): it starts
// the server and sets VIAL_TEST_SOCKET, VIAL_TEST_URL and VIAL_TEST_TOKEN.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import {
  CapacityError, Conflict, Forbidden, InvalidInput, NotFound, TooLarge, Unauthorized, VialClient, VialError, defaultSocketPath,
} from '../index.mjs';

const { VIAL_TEST_SOCKET: SOCKET, VIAL_TEST_URL: URL_, VIAL_TEST_TOKEN: TOKEN } = process.env;
const server = { skip: SOCKET ? false : 'no server: run tests/clients/run_client_tests.sh VIAL_BINARY typescript' };

// Writes to stdout and stderr alternately, flushing each, so the stream shows the order.
const INTERLEAVED = `
import sys, time
for i in range(3):
    print(f"out{i}", flush=True)
    time.sleep(0.05)
    print(f"err{i}", file=sys.stderr, flush=True)
    time.sleep(0.05)
`;
const EXPECTED_INTERLEAVING = [0, 1, 2].flatMap((i) => [['stdout', `out${i}\n`], ['stderr', `err${i}\n`]]);
// Prints, then runs far longer than any test waits (its 30 s timeout would end it first).
const SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(600)";

async function waitUntil(condition, seconds = 20) {
  const deadline = Date.now() + seconds * 1000;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

// [type, line] pairs: a line may come in several chunks ("out0", "\n"), several lines in one.
function mergedOutput(events) {
  const runs = [];
  for (const e of events) {
    if (runs.at(-1)?.[0] === e.type) runs.at(-1)[1] += e.data;
    else runs.push([e.type, e.data]);
  }
  return runs.flatMap(([type, data]) => data.split(/(?<=\n)/).filter(Boolean).map((line) => [type, line]));
}

async function collect(iterable) {
  const out = [];
  for await (const e of iterable) out.push(e);
  return out;
}

async function rejectsWith(promise, cls, status) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert.ok(e instanceof VialError);
    assert.equal(e.status, status);
    assert.ok(e.detail, 'the server says what went wrong');
    return true;
  });
}

describe('defaultSocketPath', () => {
  it('prefers VIAL_SOCKET, then VIAL_HOME', () => {
    const saved = { ...process.env };
    try {
      process.env.VIAL_SOCKET = '/x/s.sock';
      assert.equal(defaultSocketPath(), '/x/s.sock');
      process.env.VIAL_SOCKET = '';
      process.env.VIAL_HOME = '/h';
      assert.equal(defaultSocketPath(), '/h/run/vial.sock');
    } finally {
      process.env = saved;
    }
  });
});

describe('runs', server, () => {
  const vial = new VialClient({ socketPath: SOCKET });

  it('reports health and metrics', async () => {
    assert.equal((await vial.health()).status, 'ok');
    assert.match(await vial.metrics(), /vial_sandboxes/);
  });

  it('runs code with env, stdin and files; a failing program is a result', async () => {
    const code = [
      'import os, sys',
      "print(os.environ['GREETING'], sys.stdin.read())",
      "print(open('note.txt').read(), open('blob.bin', 'rb').read().hex())",
      'sys.exit(3)',
    ].join('\n');
    const r = await vial.run('python', {
      code, env: { GREETING: 'hi' }, stdin: 'from stdin',
      files: { 'note.txt': 'a note', 'blob.bin': Uint8Array.from([0, 255, 16]) },
    });
    assert.equal(r.stdout, 'hi from stdin\na note 00ff10\n', JSON.stringify(r));
    assert.equal(r.exit_code, 3);
    assert.equal(r.timed_out, false);
  });

  it('runs argv', async () => {
    const r = await vial.run('python', { argv: ['python3', '-c', 'import sys; print(sys.argv[1:])', 'a b', 'c'] });
    assert.equal(r.stdout, "['a b', 'c']\n", JSON.stringify(r));
  });

  it('streams output in order, then the result', async () => {
    const events = await collect(vial.runStream('python', { code: INTERLEAVED }));
    const last = events.pop();
    assert.equal(last.type, 'result', JSON.stringify(last));
    assert.equal(last.exit_code, 0);
    assert.equal(last.stdout, undefined);
    assert.deepEqual(mergedOutput(events), EXPECTED_INTERLEAVING);
  });

  it('rejects bad input with 400', async () => {
    await rejectsWith(vial.run('cobol', { code: "DISPLAY 'HI'" }), InvalidInput, 400);
    await rejectsWith(vial.run('python', {}), InvalidInput, 400);
  });

  it('answers 404 for an unknown session', async () => {
    await rejectsWith(vial.session('no-such-session'), NotFound, 404);
  });
});

describe('sessions', server, () => {
  const vial = new VialClient({ socketPath: SOCKET });
  let session;
  before(async () => { session = await vial.createSession('python'); });
  after(async () => { await session?.[Symbol.asyncDispose](); });

  it('keeps state across execs', async () => {
    assert.equal((await session.exec({ code: 'x = 41' })).exit_code, 0);
    const r = await session.exec({ code: 'print(x + 1)' });
    assert.equal(r.stdout, '42\n', JSON.stringify(r));
  });

  it('round-trips a binary file byte-exact and lists it', async () => {
    const data = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(200_000)]);
    const reply = await session.putFile('dir/data.bin', data, { mode: 0o600 });
    assert.equal(reply.size, data.length);
    assert.ok(data.equals(await session.getFile('dir/data.bin')), 'downloaded bytes differ');
    const entry = (await session.listFiles('dir')).find((e) => e.name === 'data.bin');
    assert.equal(entry?.size, data.length);
    assert.equal(entry.mode & 0o777, 0o600);
    assert.ok((await session.listFiles()).some((e) => e.name === 'dir'));
  });

  it('refuses paths outside the home with 400 and missing files with 404', async () => {
    await rejectsWith(session.getFile('../etc/passwd'), InvalidInput, 400);
    await rejectsWith(session.getFile('/etc/passwd'), InvalidInput, 400);
    await rejectsWith(session.getFile('does-not-exist'), NotFound, 404);
  });

  it('refuses an upload over the limit with 413', async () => {
    // Over the server's --max-file-mib 4 and its 16 MiB request limit: refused, maybe before the
    // client has sent it all.
    await rejectsWith(session.putFile('huge.bin', Buffer.alloc(17 << 20)), TooLarge, 413);
  });

  it('streams an exec', async () => {
    const events = await collect(session.execStream({ code: INTERLEAVED }));
    assert.equal(events.pop().type, 'result');
    assert.deepEqual(mergedOutput(events), EXPECTED_INTERLEAVING);
    assert.ok((await vial.sessions()).some((s) => s.id === session.id));
  });

  it('is gone once deleted', async () => {
    await vial.withSession('python', undefined, async (s) => {
      await s.delete();
      await rejectsWith(s.exec({ code: 'print(1)' }), NotFound, 404);
      await rejectsWith(vial.session(s.id), NotFound, 404);
    });
  });
});

describe('hanging up', server, () => {
  const vial = new VialClient({ socketPath: SOCKET });

  it('cancels the run when a runStream loop is left early', async () => {
    for await (const e of vial.runStream('python', { code: SLEEPER })) {
      assert.equal(e.type, 'stdout');
      break;
    }
    assert.ok(await waitUntil(async () => (await vial.metrics()).includes('vial_runs_in_flight 0\n')));
  });

  it('deletes the session when an execStream loop is left early', async () => {
    await vial.withSession('python', undefined, async (s) => {
      for await (const e of s.execStream({ code: SLEEPER })) {
        assert.equal(e.type, 'stdout');
        await rejectsWith(s.exec({ code: 'print(1)' }), Conflict, 409); // one exec at a time
        break;
      }
      assert.ok(await waitUntil(async () => !(await vial.sessions()).some((x) => x.id === s.id)));
    });
  });
});

describe('capacity', server, () => {
  it('answers 503 capacity with a retry delay when the server is full', async () => {
    // The server runs with --max-vms 2: two sessions fill it; a third waits for admission (the
    // server's queue deadline), then gets 503 capacity.
    const vial = new VialClient({ socketPath: SOCKET });
    await vial.withSession('python', undefined, () => vial.withSession('python', undefined, async () => {
      await assert.rejects(vial.createSession('python'), (e) => {
        assert.ok(e instanceof CapacityError, String(e));
        assert.equal(e.status, 503);
        assert.ok(e.retryAfter > 0);
        return true;
      });
    }));
  });
});

describe('tcp', server, () => {
  it('needs the token (401 without, 403 wrong) except for /healthz', async () => {
    await rejectsWith(new VialClient({ baseUrl: URL_ }).sessions(), Unauthorized, 401);
    await rejectsWith(new VialClient({ baseUrl: URL_, token: 'wrong-token-wrong-token' }).sessions(), Forbidden, 403);
    assert.equal((await new VialClient({ baseUrl: URL_ }).health()).status, 'ok');
  });

  it('runs and streams with the token', async () => {
    const vial = new VialClient({ baseUrl: URL_, token: TOKEN });
    assert.equal((await vial.run('python', { code: "print('over tcp')" })).stdout, 'over tcp\n');
    const events = await collect(vial.runStream('python', { code: "print('s')" }));
    assert.equal(events.pop().type, 'result');
    assert.deepEqual(mergedOutput(events), [['stdout', 's\n']]);
  });
});
