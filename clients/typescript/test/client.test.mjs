// Tests of the client against a real `vial serve`. Run them with
// tests/clients/run_client_tests.sh VIAL_BINARY typescript (CTest: ClientsTypeScript): it starts
// the server and sets VIAL_TEST_SOCKET, VIAL_TEST_URL and VIAL_TEST_TOKEN.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
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

// Byte-exactness (issue 14): stdout gets every byte value, a reversed BOM, a lone continuation
// byte, then text with a euro sign split across two writes (two chunks, most likely); stderr the
// byte values reversed.
const BINARY = `
import sys, time
o, e = sys.stdout.buffer, sys.stderr.buffer
o.write(bytes(range(256)) + b"\\xff\\xfe\\x80"); o.flush()
e.write(bytes(range(255, -1, -1))); e.flush()
time.sleep(0.2)
o.write(b" split \\xe2\\x82"); o.flush()
time.sleep(0.2)
o.write(b"\\xac euro\\n"); o.flush()
`;
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const BINARY_STDOUT = Buffer.concat([ALL_BYTES, Buffer.from('fffe80', 'hex'), Buffer.from(' split \u20ac euro\n')]);
const BINARY_STDERR = Buffer.from(ALL_BYTES).reverse();
const ECHO = 'import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())';
const BINARY_STDIN = Buffer.concat([ALL_BYTES, Buffer.from('fffe80e282', 'hex')]);

const streamedBytes = (events, type) => Buffer.concat(events.filter((e) => e.type === type).map((e) => e.data_bytes));

function assertBytes(actual, expected, what) {
  assert.ok(Buffer.isBuffer(actual), `${what}: not a Buffer`);
  assert.ok(actual.equals(expected), `${what}: ${actual.toString('hex')} != ${expected.toString('hex')}`);
}

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

// The network tests talk only to servers they start themselves on 127.0.0.2 (loopback): a guest
// reaches one through a name vial answers itself (add_hosts) and an allow_cidrs rule for exactly
// that address. Nothing here resolves or reaches any other address.
const GOOD_HOST = 'good.test';
const GOOD_IP = '127.0.0.2';

// Resolves once `server` listens on 127.0.0.2 (a free port).
function listenOnGoodIp(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, GOOD_IP, () => resolve(server.address().port));
  });
}

describe('network', server, () => {
  const vial = new VialClient({ socketPath: SOCKET });
  const body = `hello from the host ${randomBytes(6).toString('hex')}`;
  const seen = [];
  const site = http.createServer((req, res) => {
    seen.push([req.url, req.headers.host]);
    res.writeHead(200, { 'Content-Type': 'text/plain' }).end(body);
  });
  const network = { allow_hosts: [GOOD_HOST], add_hosts: { [GOOD_HOST]: GOOD_IP }, allow_cidrs: [`${GOOD_IP}/32`] };
  let port;
  let fetch;
  before(async () => {
    port = await listenOnGoodIp(site);
    fetch = 'import urllib.request\n'
      + `print(urllib.request.urlopen('http://${GOOD_HOST}:${port}/x', timeout=20).read().decode(), end='')\n`;
  });
  after(() => new Promise((resolve) => site.close(resolve)));

  it('fetches from an allowed host the test serves on 127.0.0.2', async () => {
    seen.length = 0;
    const r = await vial.run('python', { code: fetch, network });
    assert.equal(r.exit_code, 0, JSON.stringify(r));
    assert.equal(r.stdout, body, JSON.stringify(r));
    assert.ok(r.network.allowed >= 1, JSON.stringify(r.network));
    assert.deepEqual(seen, [['/x', `${GOOD_HOST}:${port}`]]);
  });

  it('streams a run with a network', async () => {
    const events = await collect(vial.runStream('python', { code: fetch, network }));
    const last = events.pop();
    assert.equal(last.type, 'result', JSON.stringify(last));
    assert.equal(events.filter((e) => e.type === 'stdout').map((e) => e.data).join(''), body);
    assert.ok(last.network.allowed >= 1, JSON.stringify(last.network));
  });

  it('reaches nothing without a network', async () => {
    seen.length = 0;
    const r = await vial.run('python', { code: fetch });
    assert.notEqual(r.exit_code, 0, JSON.stringify(r));
    assert.equal(r.network, undefined);
    assert.deepEqual(seen, []);
  });

  it('rejects an invalid network with 400 naming the field', async () => {
    await assert.rejects(vial.run('python', { code: 'print(1)', network: { allow_cidrs: ['10.0.0.1/8'] } }), (e) => {
      assert.ok(e instanceof InvalidInput, String(e));
      assert.equal(e.status, 400);
      assert.match(e.detail, /network\.allow_cidrs\[0\]/);
      return true;
    });
    // A one-shot run can't publish ports.
    await assert.rejects(vial.run('python', { code: 'print(1)', network: { ports: [`${GOOD_IP}:8080:80`] } }),
      (e) => e instanceof InvalidInput && /network\.ports/.test(e.detail));
  });

  it('answers 409 when the host port of a session is in use', async () => {
    const taken = net.createServer();
    const takenPort = await listenOnGoodIp(taken);
    try {
      await assert.rejects(vial.createSession('python', {
        network: { ports: [{ host_ip: GOOD_IP, host_port: takenPort, guest_port: 8000 }] },
      }), (e) => {
        assert.ok(e instanceof Conflict, String(e));
        assert.equal(e.status, 409);
        assert.ok(e.detail.includes(String(takenPort)), e.detail);
        return true;
      });
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('gives a session a network and reports it normalized', async () => {
    await vial.withSession('python', { network: { ...network, add_hosts: [`${GOOD_HOST}:${GOOD_IP}`] } }, async (s) => {
      assert.deepEqual(s.info.network, {
        enabled: true, allow_hosts: [GOOD_HOST], allow_cidrs: [`${GOOD_IP}/32`], add_hosts: { [GOOD_HOST]: GOOD_IP }, ports: [],
      });
      const r = await s.exec({ code: fetch });
      assert.equal(r.stdout, body, JSON.stringify(r));
      assert.ok(r.network.allowed >= 1, JSON.stringify(r.network));
    });
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

describe('bytes', server, () => {
  const vial = new VialClient({ socketPath: SOCKET });
  let session;
  before(async () => { session = await vial.createSession('python'); });
  after(async () => { await session?.[Symbol.asyncDispose](); });

  const checkResult = (r) => {
    assertBytes(r.stdout_bytes, BINARY_STDOUT, 'stdout');
    assertBytes(r.stderr_bytes, BINARY_STDERR, 'stderr');
    assert.equal(r.stdout, BINARY_STDOUT.toString('utf8'));
    assert.equal(r.stdout_base64, undefined);
  };
  const checkStream = (events) => {
    assert.equal(events.at(-1).type, 'result');
    assertBytes(streamedBytes(events, 'stdout'), BINARY_STDOUT, 'streamed stdout');
    assertBytes(streamedBytes(events, 'stderr'), BINARY_STDERR, 'streamed stderr');
  };

  it('runs with byte-exact output, text staying text', async () => {
    checkResult(await vial.run('python', { code: BINARY }));
    const r = await vial.run('python', { code: "print('t\u00e9xt')" });
    assert.equal(r.stdout, 't\u00e9xt\n');
    assertBytes(r.stdout_bytes, Buffer.from('t\u00e9xt\n'), 'text stdout');
  });

  it('streams a run byte-exact', async () => {
    checkStream(await collect(vial.runStream('python', { code: BINARY })));
  });

  it('sends bytes as stdin', async () => {
    assertBytes((await vial.run('python', { code: ECHO, stdin: BINARY_STDIN })).stdout_bytes, BINARY_STDIN, 'echo');
    const events = await collect(vial.runStream('python', { code: ECHO, stdin: new Uint8Array(BINARY_STDIN) }));
    assertBytes(streamedBytes(events, 'stdout'), BINARY_STDIN, 'streamed echo');
  });

  it('runs over TCP byte-exact', { skip: URL_ ? false : 'no TCP endpoint' }, async () => {
    checkResult(await new VialClient({ baseUrl: URL_, token: TOKEN }).run('python', { code: BINARY }));
  });

  it('keeps session execs and files byte-exact', async () => {
    checkResult(await session.exec({ code: BINARY }));
    checkStream(await collect(session.execStream({ code: BINARY })));
    assertBytes((await session.exec({ code: ECHO, stdin: BINARY_STDIN })).stdout_bytes, BINARY_STDIN, 'session echo');
    await session.putFile('bytes.bin', BINARY_STDIN);
    assertBytes(await session.getFile('bytes.bin'), BINARY_STDIN, 'file');
    const r = await session.exec({ code: "import sys; sys.stdout.buffer.write(open('bytes.bin', 'rb').read())" });
    assertBytes(r.stdout_bytes, BINARY_STDIN, 'file read by the program');
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
