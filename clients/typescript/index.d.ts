// Types of the vial serve client (index.mjs). See docs/api.md for the fields' meaning.

export type Language = 'python' | 'javascript' | 'shell';

export interface ClientOptions {
  /** Unix socket of the server; default $VIAL_SOCKET, else $VIAL_HOME/run/vial.sock. */
  socketPath?: string;
  /** http[s]://host:port instead of a unix socket (TCP needs `token`). */
  baseUrl?: string;
  /** Bearer token (the first line of the server's --token-file). */
  token?: string;
  /** Seconds to wait for a reply to a request that runs no program (default 120). */
  timeout?: number;
  /** Sent as X-Vial-Tenant: names the tenant in the server's logs and VM names. */
  tenant?: string;
}

export interface ExecOptions {
  code?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Text, or bytes (sent as stdin_base64). */
  stdin?: string | Uint8Array;
  /** The program's timeout in seconds (1-3600, default 30). */
  timeout?: number;
}

export interface UploadFile {
  path: string;
  content?: string;
  content_base64?: string;
  mode?: number;
}

/** A port published on the host: the server listens on host_ip:host_port and relays to the guest. */
export interface PortMapping {
  /** IPv4 address to listen on (default 127.0.0.1). */
  host_ip?: string;
  host_port: number;
  guest_port: number;
}

/**
 * A sandbox's network policy (docs/api.md, "Network"); every field optional. Without one a
 * sandbox has no network. A bad value rejects with InvalidInput naming the field
 * (`network.allow_cidrs[0] ...`).
 */
export interface NetworkPolicy {
  /** A network; without allow_hosts every public address. Implied by allow_hosts, allow_cidrs and ports. */
  enabled?: boolean;
  /** Names the guest may resolve and reach: 'pypi.test', '*.pythonhosted.test' (names below it). */
  allow_hosts?: string[];
  /** Addresses reachable whatever the name ('127.0.0.2/32'); the only way into blocked ranges (loopback, private, ...). */
  allow_cidrs?: string[];
  /** Fixed DNS answers: {name: ip} or ['name:ip']. An allowlist must still allow the name. */
  add_hosts?: Record<string, string> | string[];
  /**
   * Sessions only (a run rejects them with InvalidInput): '[HOST_IP:]HOST_PORT:GUEST_PORT'
   * ('8080:80') or objects. A host port in use rejects with Conflict.
   */
  ports?: (string | PortMapping)[];
}

/** A policy as the server reports it (a session's `network`): every field, normalized. */
export interface NormalizedNetworkPolicy {
  enabled: boolean;
  allow_hosts: string[];
  allow_cidrs: string[];
  add_hosts: Record<string, string>;
  /** 'HOST_IP:HOST_PORT:GUEST_PORT' */
  ports: string[];
}

export interface RunOptions extends ExecOptions {
  /** {path: text or bytes} or explicit entries; written into the sandbox home first. */
  files?: Record<string, string | Uint8Array> | UploadFile[];
  /** Must equal the server's --memory. */
  memoryMib?: number;
  /** The sandbox's network (none by default); `ports` are refused for a one-shot run. */
  network?: NetworkPolicy;
}

export interface SessionOptions {
  /** Seconds idle before the server deletes the session (default 600). */
  idleTimeout?: number;
  /** Must equal the server's --memory. */
  memoryMib?: number;
  /** The session's network (none by default), `ports` included. */
  network?: NetworkPolicy;
}

/** A VM's network decisions (DNS lookups and TCP connections) so far. */
export interface NetworkCounts {
  allowed: number;
  denied: number;
}

export interface Timing {
  acquire_ms: number;
  boot_ms: number;
  exec_ms: number;
  total_ms: number;
}

export interface RunResult {
  /** The output as text; bytes that are not UTF-8 show as U+FFFD. */
  stdout: string;
  stderr: string;
  /** The output byte-exact (the client decodes the wire's stdout_base64 / stderr_base64). */
  stdout_bytes: Buffer;
  stderr_bytes: Buffer;
  exit_code: number;
  signal: number | null;
  timed_out: boolean;
  truncated: boolean;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  accel: string;
  source: 'warm' | 'template' | 'cold';
  timing: Timing;
  /** Only when the sandbox has a network (in a session: since it was created). */
  network?: NetworkCounts;
}

/**
 * A chunk of output as the program's pipe gave it: `data` as text (invalid UTF-8, a character
 * split across chunks included, as U+FFFD), `data_bytes` exact; join data_bytes for the output.
 */
export type OutputEvent = { type: 'stdout' | 'stderr'; data: string; data_bytes: Buffer };
export type ResultEvent = { type: 'result' } & Omit<RunResult, 'stdout' | 'stderr' | 'stdout_bytes' | 'stderr_bytes'>;
/** Output events in the order the program wrote them, then one result event. */
export type StreamEvent = OutputEvent | ResultEvent;

export interface SessionInfo {
  id: string;
  language: Language;
  vm: string;
  source: string;
  idle_timeout: number;
  created_at: string;
  execs: number;
  busy: boolean;
  alive: boolean;
  network: NormalizedNetworkPolicy;
}

export interface FileEntry {
  name: string;
  type: string;
  size: number;
  mode: number;
  mtime: number;
}

export interface Health {
  status: 'ok' | 'draining';
  version: string;
  accel: string;
  vms: number;
  sessions: number;
  warm_pool: Record<string, number>;
}

export class VialError extends Error {
  readonly status: number;
  readonly code: string;
  /** The server's message (what went wrong and what to do). */
  readonly detail: string;
}
/** 400 */
export class InvalidInput extends VialError {}
/** 401: TCP without a token */
export class Unauthorized extends VialError {}
/** 403: wrong token */
export class Forbidden extends VialError {}
/** 404 */
export class NotFound extends VialError {}
/** 409: the session is running code already; a published host port is in use */
export class Conflict extends VialError {}
/** 413 */
export class TooLarge extends VialError {}
/** 502 */
export class BootFailed extends VialError {}
/** 503: shutting down */
export class Unavailable extends VialError {}
/** 503 `capacity`: retry after `retryAfter` seconds */
export class CapacityError extends Unavailable {
  readonly retryAfter?: number;
}
/** 504, or no reply in time (code `client_timeout`, status 0) */
export class VialTimeout extends VialError {}

export function defaultSocketPath(): string;

export class VialClient {
  constructor(options?: ClientOptions);
  /** A failing program is a result (exit_code != 0), not an error. */
  run(language: Language, options?: RunOptions): Promise<RunResult>;
  /** Stopping the iteration early hangs up, which cancels the run. */
  runStream(language: Language, options?: RunOptions): AsyncGenerator<StreamEvent, void, undefined>;
  createSession(language?: Language, options?: SessionOptions): Promise<Session>;
  /** Creates a session, passes it to `fn`, deletes it afterwards. */
  withSession<T>(language: Language, options: SessionOptions | undefined,
                 fn: (session: Session) => Promise<T>): Promise<T>;
  /** An existing session (NotFound if none). */
  session(id: string): Promise<Session>;
  sessions(): Promise<SessionInfo[]>;
  health(): Promise<Health>;
  /** Prometheus text format. */
  metrics(): Promise<string>;
}

export class Session {
  readonly client: VialClient;
  readonly id: string;
  readonly language: Language;
  info: SessionInfo;
  refresh(): Promise<SessionInfo>;
  exec(options: ExecOptions): Promise<RunResult>;
  /** IMPORTANT: stopping before the result event hangs up, and the server deletes the session. */
  execStream(options: ExecOptions): AsyncGenerator<StreamEvent, void, undefined>;
  /** Written byte-exact, relative to the sandbox home. */
  putFile(path: string, data: string | Uint8Array, options?: { mode?: number }): Promise<{ path: string; size: number }>;
  getFile(path: string): Promise<Buffer>;
  listFiles(dir?: string): Promise<FileEntry[]>;
  delete(): Promise<void>;
  /** Deletes the session, tolerating it being gone (`await using`). */
  [Symbol.asyncDispose](): Promise<void>;
}
