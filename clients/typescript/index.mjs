// Client for the `vial serve` HTTP API (docs/api.md). Node 20, no dependencies; types in
// index.d.ts. Every request opens its own connection: a stream that is abandoned hangs up, and
// the server then cancels the run (or deletes the session of an exec).
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';

// Seconds a request may wait beyond the program's own timeout (boot, queueing, file writes).
const SLACK_S = 120;
const DEFAULT_PROGRAM_TIMEOUT_S = 30;

export class VialError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}
export class InvalidInput extends VialError {}
export class Unauthorized extends VialError {}
export class Forbidden extends VialError {}
export class NotFound extends VialError {}
export class Conflict extends VialError {}
export class TooLarge extends VialError {}
export class BootFailed extends VialError {}
export class Unavailable extends VialError {}
export class CapacityError extends Unavailable {
  constructor(status, code, message, retryAfter) {
    super(status, code, message);
    this.retryAfter = retryAfter;
  }
}
export class VialTimeout extends VialError {}

const BY_CODE = {
  invalid_input: [400, InvalidInput],
  bad_request: [400, InvalidInput],
  unauthorized: [401, Unauthorized],
  forbidden: [403, Forbidden],
  not_found: [404, NotFound],
  conflict: [409, Conflict],
  too_large: [413, TooLarge],
  boot_failed: [502, BootFailed],
  capacity: [503, CapacityError],
  unavailable: [503, Unavailable],
  timeout: [504, VialTimeout],
};
const BY_STATUS = Object.fromEntries(
  Object.values(BY_CODE).map(([status, cls]) => [status, cls]).filter(([, cls]) => cls !== CapacityError));

function makeError(status, error, retryAfter) {
  const code = String(error?.code ?? `http_${status}`);
  const message = String(error?.message ?? '');
  const cls = BY_CODE[code]?.[1] ?? BY_STATUS[status] ?? VialError;
  if (cls === CapacityError) {
    const seconds = Number(retryAfter);
    return new CapacityError(status, code, message, retryAfter != null && Number.isFinite(seconds) ? seconds : undefined);
  }
  return new cls(status, code, message);
}

// Mirrors vial_home() in src/util/paths.cc.
function vialHome() {
  const env = process.env;
  if (env.VIAL_HOME) return path.resolve(env.VIAL_HOME);
  if (process.geteuid?.() === 0) return '/var/lib/vial';
  if (env.XDG_DATA_HOME) return path.join(env.XDG_DATA_HOME, 'vial');
  return path.join(os.homedir(), '.local', 'share', 'vial');
}

/** $VIAL_SOCKET, else $VIAL_HOME/run/vial.sock (the server's default). */
export function defaultSocketPath() {
  return process.env.VIAL_SOCKET || path.join(vialHome(), 'run', 'vial.sock');
}

const quote = (s) => encodeURIComponent(s);
// Keeps the slashes between segments, but a leading one is escaped: the server would read
// "files//etc" as the relative path "etc".
const quotePath = (p) => p.split('/').map(encodeURIComponent).join('/').replace(/^\//, '%2F');

function filesJson(files) {
  if (Array.isArray(files)) return files;
  return Object.entries(files).map(([p, data]) => (typeof data === 'string'
    ? { path: p, content: data }
    : { path: p, content_base64: Buffer.from(data).toString('base64') }));
}

// The JSON body of a run or exec: only the fields given. Bytes for stdin go base64.
function execBody(options, extra = {}) {
  const body = { ...extra };
  for (const key of ['code', 'argv', 'env', 'cwd', 'timeout']) {
    if (options[key] !== undefined) body[key] = options[key];
  }
  if (typeof options.stdin === 'string') body.stdin = options.stdin;
  else if (options.stdin != null) body.stdin_base64 = Buffer.from(options.stdin).toString('base64');
  return body;
}

// The wire carries bytes as text `name` when they are UTF-8, else as `name`_base64 (docs/api.md,
// "Bytes in JSON"). Leaves `name` (a string; invalid UTF-8 as U+FFFD) and `name`_bytes (a
// Buffer, exact) in `obj`.
function takeBytes(obj, name) {
  const encoded = obj[`${name}_base64`];
  let raw;
  if (encoded !== undefined) {
    raw = Buffer.from(encoded, 'base64');
    delete obj[`${name}_base64`];
    obj[name] = raw.toString('utf8');
  } else if (typeof obj[name] === 'string') {
    raw = Buffer.from(obj[name], 'utf8');
  } else {
    return obj;
  }
  obj[`${name}_bytes`] = raw;
  return obj;
}

const runResult = (result) => takeBytes(takeBytes(result, 'stdout'), 'stderr');

const requestWaitS = (body) => (body.timeout ?? DEFAULT_PROGRAM_TIMEOUT_S) + SLACK_S;

export class VialClient {
  /**
   * @param {{socketPath?: string, baseUrl?: string, token?: string, timeout?: number, tenant?: string}} [options]
   */
  constructor({ socketPath, baseUrl, token, timeout = SLACK_S, tenant } = {}) {
    if (socketPath && baseUrl) throw new TypeError('give socketPath or baseUrl, not both');
    this.token = token;
    this.timeout = timeout;
    this.tenant = tenant;
    if (baseUrl) {
      const url = new URL(baseUrl);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new TypeError(`baseUrl must look like http://127.0.0.1:8080, got ${baseUrl}`);
      }
      this.baseUrl = url;
      this.prefix = url.pathname.replace(/\/+$/, '');
    } else {
      this.socketPath = socketPath || defaultSocketPath();
      this.prefix = '';
    }
  }

  // Sends a request; resolves to the response (an error status rejects with a VialError
  // unless listed in `allow`). The caller consumes or destroys the response. `expectContinue`
  // (uploads): the body goes only after the server's 100 Continue, so a refusal (413) arrives
  // as a reply instead of a broken pipe.
  send(method, target, {
    body, contentType, accept = 'application/json', waitS = this.timeout, allow = [], expectContinue = false,
  } = {}) {
    const headers = { Accept: accept, Connection: 'close' };
    if (expectContinue) headers.Expect = '100-continue';
    if (contentType) headers['Content-Type'] = contentType;
    if (body !== undefined) headers['Content-Length'] = Buffer.byteLength(body);
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (this.tenant) headers['X-Vial-Tenant'] = this.tenant;
    const options = { method, path: this.prefix + target, headers, agent: false };
    let transport = http;
    if (this.socketPath) {
      options.socketPath = this.socketPath;
    } else {
      transport = this.baseUrl.protocol === 'https:' ? https : http;
      options.hostname = this.baseUrl.hostname.replace(/^\[|\]$/g, '');
      options.port = this.baseUrl.port || undefined;
    }
    return new Promise((resolve, reject) => {
      let sendError;
      const req = transport.request(options, (res) => {
        sendError = undefined;
        if (res.statusCode < 400 || allow.includes(res.statusCode)) {
          resolve(res);
          return;
        }
        readAll(res).then((raw) => {
          let error;
          try {
            error = JSON.parse(raw.toString('utf8')).error;
          } catch {
            // not JSON: keep the text
          }
          error ??= { code: `http_${res.statusCode}`, message: raw.toString('utf8').trim() };
          reject(makeError(res.statusCode, error, res.headers['retry-after']));
        }, reject);
      });
      req.setTimeout(waitS * 1000, () => req.destroy(new VialTimeout(0, 'client_timeout',
        `no reply from vial serve within ${waitS} s`)));
      req.on('error', (e) => {
        // The server may have refused the body (413) and closed before reading it all: its
        // reply can still arrive; fail with the write error only if it doesn't.
        if (e.code === 'EPIPE' || e.code === 'ECONNRESET') sendError = e;
        else reject(e);
      });
      req.on('close', () => { if (sendError) reject(sendError); });
      if (expectContinue) {
        req.on('continue', () => req.end(body));
        req.flushHeaders();
      } else {
        req.end(body);
      }
    });
  }

  async call(method, target, options) {
    return readAll(await this.send(method, target, options));
  }

  // A JSON reply; `payload` (if given) is sent as the JSON body, else options.body as is.
  async json(method, target, payload, options = {}) {
    if (payload !== undefined) {
      options = { ...options, body: JSON.stringify(payload), contentType: 'application/json' };
    }
    return JSON.parse((await this.call(method, target, options)).toString('utf8'));
  }

  async *stream(target, payload) {
    const res = await this.send('POST', target, {
      body: JSON.stringify(payload), contentType: 'application/json', accept: 'application/x-ndjson',
      waitS: requestWaitS(payload) });
    try {
      let pending = '';
      for await (const chunk of res.setEncoding('utf8')) {
        pending += chunk;
        let newline;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (!line) continue;
          const event = JSON.parse(line);
          if (event.type === 'error') {
            throw makeError(BY_CODE[event.error?.code]?.[0] ?? 500, event.error);
          }
          yield takeBytes(event, 'data');
        }
      }
    } finally {
      res.destroy(); // an early stop hangs up: the server cancels the run
    }
  }

  /**
   * Runs code or argv once in a fresh sandbox; a failing program is a result, not an error.
   * `options.network` (the API's network object, no `ports`) gives the sandbox a network; the
   * result then has `network: {allowed, denied}`.
   */
  async run(language, options = {}) {
    const body = runBody(language, options);
    return runResult(await this.json('POST', '/v1/run', body, { waitS: requestWaitS(body) }));
  }

  /**
   * Like run(), yielding {type: 'stdout'|'stderr', data, data_bytes} in order, then
   * {type: 'result', ...}. A chunk may end inside a UTF-8 character: join data_bytes for exact output.
   */
  runStream(language, options = {}) {
    return this.stream('/v1/run', runBody(language, options));
  }

  /**
   * Starts a sandbox kept across calls. `network` is the API's network object (as for run(),
   * plus `ports` to publish guest TCP ports on the host; a host port in use rejects with Conflict).
   */
  async createSession(language = 'python', { idleTimeout, memoryMib, network } = {}) {
    const body = { language };
    if (idleTimeout !== undefined) body.idle_timeout = idleTimeout;
    if (memoryMib !== undefined) body.memory_mib = memoryMib;
    if (network != null) body.network = network;
    return new Session(this, await this.json('POST', '/v1/sessions', body, { waitS: this.timeout + SLACK_S }));
  }

  /** Creates a session, passes it to `fn` and deletes it afterwards, however `fn` ends. */
  async withSession(language, options, fn) {
    const session = await this.createSession(language, options);
    try {
      return await fn(session);
    } finally {
      await session[Symbol.asyncDispose]();
    }
  }

  async session(id) {
    return new Session(this, await this.json('GET', `/v1/sessions/${quote(id)}`));
  }

  async sessions() {
    return (await this.json('GET', '/v1/sessions')).sessions;
  }

  /** {status: 'ok'|'draining', ...}; a draining server's 503 is returned, not thrown. */
  health() {
    return this.json('GET', '/healthz', undefined, { allow: [503] });
  }

  async metrics() {
    return (await this.call('GET', '/metrics')).toString('utf8');
  }
}

function runBody(language, options) {
  const body = execBody(options, { language });
  if (options.files !== undefined) body.files = filesJson(options.files);
  if (options.memoryMib !== undefined) body.memory_mib = options.memoryMib;
  if (options.network != null) body.network = options.network;
  return body;
}

async function readAll(res) {
  const chunks = [];
  for await (const chunk of res) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export class Session {
  constructor(client, info) {
    this.client = client;
    this.id = info.id;
    this.language = info.language;
    this.info = info;
  }

  get #path() {
    return `/v1/sessions/${quote(this.id)}`;
  }

  async refresh() {
    this.info = await this.client.json('GET', this.#path);
    return this.info;
  }

  async exec(options = {}) {
    const body = execBody(options);
    return runResult(await this.client.json('POST', `${this.#path}/exec`, body, { waitS: requestWaitS(body) }));
  }

  /** IMPORTANT: stopping before the result event hangs up, and the server deletes the session. */
  execStream(options = {}) {
    return this.client.stream(`${this.#path}/exec`, execBody(options));
  }

  putFile(filePath, data, { mode = 0o644 } = {}) {
    const body = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    return this.client.json('PUT', `${this.#path}/files/${quotePath(filePath)}?mode=${mode.toString(8)}`, undefined, {
      body, contentType: 'application/octet-stream', waitS: this.client.timeout + SLACK_S, expectContinue: true });
  }

  getFile(filePath) {
    return this.client.call('GET', `${this.#path}/files/${quotePath(filePath)}`, { waitS: this.client.timeout + SLACK_S });
  }

  async listFiles(dir = '.') {
    return (await this.client.json('GET', `${this.#path}/files?dir=${quote(dir)}`)).entries;
  }

  async delete() {
    await this.client.json('DELETE', this.#path);
  }

  /** Deletes the session, tolerating it being gone (`await using` in TypeScript 5.2+). */
  async [Symbol.asyncDispose]() {
    try {
      await this.delete();
    } catch (e) {
      if (!(e instanceof NotFound)) throw e;
    }
  }
}
