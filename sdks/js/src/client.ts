/** SinasClient: one authenticated HTTP transport and the resource groups built on it. */

import { SinasApiError, SinasConnectionError, SinasTimeoutError } from "./errors.js";
import type {
  AuthUser,
  Batch,
  BatchCancelResult,
  BatchExecution,
  Chat,
  Execution,
  ExecutionStatus,
  ListBatchExecutionsParams,
  ListExecutionsParams,
  WaitOptions,
} from "./types.js";

/** A credential source: returns the current bearer token (sync or async). */
export type AccessTokenProvider = () =>
  | string
  | null
  | undefined
  | Promise<string | null | undefined>;

export interface SinasClientOptions {
  /** The gateway's URL, e.g. "https://jobs.example.com". */
  baseUrl: string;
  /** An API key, sent as `Authorization: Bearer`. Ignored when getAccessToken is given. */
  apiKey?: string;
  /** Called before every request for the user's current token (e.g. from a session store). */
  getAccessToken?: AccessTokenProvider;
  /**
   * Called once when the API answers 401. Return true after refreshing the credential to
   * retry the request once with a fresh getAccessToken(); anything else gives up.
   */
  onUnauthenticated?: () => boolean | void | Promise<boolean | void>;
  /** Per-request timeout; default 30 000 ms. */
  timeoutMs?: number;
  /** Retries of idempotent requests after a connection error or a 503; default 3. */
  maxRetries?: number;
  /** A fetch implementation; default the global one. */
  fetch?: typeof fetch;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

type QueryValue = string | number | boolean | null | undefined;

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  body?: unknown;
  headers?: Record<string, string>;
  /**
   * Safe to send twice: retried after a connection error or a 503. Defaults to true for
   * GET and for requests carrying an Idempotency-Key, false otherwise.
   */
  idempotent?: boolean;
  timeoutMs?: number;
}

const TERMINAL_EXECUTION: readonly ExecutionStatus[] = ["COMPLETED", "FAILED", "CANCELLED"];
const RETRY_BASE_MS = 200;

/** The runtime's REST API. Methods return the server's documents as they come. */
export class SinasClient {
  readonly baseUrl: string;
  readonly auth: AuthResource;
  readonly executions: ExecutionsResource;
  readonly batches: BatchesResource;
  readonly chats: ChatsResource;

  readonly #options: SinasClientOptions;
  readonly #fetch: typeof fetch;

  constructor(options: SinasClientOptions) {
    if (!options || typeof options.baseUrl !== "string" || options.baseUrl === "") {
      throw new TypeError("SinasClient needs a baseUrl");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#options = options;
    const chosen = options.fetch ?? globalThis.fetch;
    if (typeof chosen !== "function") {
      throw new TypeError("no fetch available: pass one in options.fetch");
    }
    // Bound so a browser's window.fetch is not called on the client as `this`.
    this.#fetch = chosen.bind(globalThis);
    this.auth = new AuthResource(this);
    this.executions = new ExecutionsResource(this);
    this.batches = new BatchesResource(this);
    this.chats = new ChatsResource(this);
  }

  /** Any call on the API; throws SinasApiError for an error status. */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { ...this.#options.headers, ...options.headers };
    const idempotent =
      options.idempotent ??
      (method.toUpperCase() === "GET" ||
        Object.keys(headers).some((name) => name.toLowerCase() === "idempotency-key"));
    const maxRetries = idempotent ? (this.#options.maxRetries ?? 3) : 0;
    let refreshed = false;
    for (let attempt = 0; ; attempt += 1) {
      let response: Response;
      try {
        response = await this.#send(method, path, options, headers);
      } catch (error) {
        if (error instanceof SinasConnectionError && error.retryable && attempt < maxRetries) {
          await sleep(backoff(attempt));
          continue;
        }
        throw error;
      }
      if (response.status === 503 && attempt < maxRetries) {
        await discard(response);
        await sleep(backoff(attempt));
        continue;
      }
      if (response.status === 401 && !refreshed && this.#options.onUnauthenticated) {
        refreshed = true;
        await discard(response);
        if ((await this.#options.onUnauthenticated()) === true) {
          attempt -= 1;
          continue;
        }
        throw new SinasApiError(401, "Unauthenticated", null);
      }
      return (await readBody(response)) as T;
    }
  }

  async #send(
    method: string,
    path: string,
    options: RequestOptions,
    headers: Record<string, string>,
  ): Promise<Response> {
    const sent: Record<string, string> = { accept: "application/json", ...headers };
    const token = await this.#credential();
    if (token) {
      sent["authorization"] = `Bearer ${token}`;
    }
    let body: string | undefined;
    if (options.body !== undefined) {
      sent["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    const controller = new AbortController();
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs ?? 30_000;
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      const init: RequestInit = { method, headers: sent, signal: controller.signal };
      if (body !== undefined) {
        init.body = body;
      }
      return await this.#fetch(this.#url(path, options.query), init);
    } catch (error) {
      if (controller.signal.aborted) {
        throw new SinasConnectionError(`${method} ${path} timed out after ${timeoutMs} ms`, {
          cause: error,
          retryable: false,
        });
      }
      throw new SinasConnectionError(`${method} ${path} failed: ${describe(error)}`, {
        cause: error,
        retryable: true,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async #credential(): Promise<string | undefined> {
    if (this.#options.getAccessToken) {
      return (await this.#options.getAccessToken()) ?? undefined;
    }
    return this.#options.apiKey;
  }

  #url(path: string, query: Record<string, QueryValue> | undefined): string {
    let url = this.baseUrl + (path.startsWith("/") ? path : `/${path}`);
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) {
        params.append(name, String(value));
      }
    }
    const text = params.toString();
    if (text) {
      url += `?${text}`;
    }
    return url;
  }
}

/** `client.auth`. */
export class AuthResource {
  constructor(private readonly client: SinasClient) {}

  /** The caller: `{id, email, roles, created_at, last_login_at}`. */
  getMe(): Promise<AuthUser> {
    return this.client.request("GET", "/auth/me");
  }
}

/** `client.executions`. */
export class ExecutionsResource {
  constructor(private readonly client: SinasClient) {}

  /** One execution; someone else's answers 404. */
  get(executionId: string): Promise<Execution> {
    return this.client.request("GET", `/executions/${segment(executionId)}`);
  }

  /** Newest first. */
  list(params: ListExecutionsParams = {}): Promise<Execution[]> {
    return this.client.request("GET", "/executions", {
      query: {
        function_name: params.functionName,
        status: params.status,
        trigger_id: params.triggerId,
        batch_id: params.batchId,
        limit: params.limit,
        offset: params.offset,
      },
    });
  }

  /** Polls until the execution is COMPLETED, FAILED or CANCELLED (or one of `statuses`). */
  async wait(
    executionId: string,
    options: WaitOptions & { statuses?: readonly ExecutionStatus[] } = {},
  ): Promise<Execution> {
    const wanted = options.statuses ?? TERMINAL_EXECUTION;
    return poll(
      () => this.get(executionId),
      (document) => wanted.includes(document.status),
      options,
      `execution ${executionId}`,
    );
  }

  /** Answers the `input()` an AWAITING_INPUT execution is waiting on. */
  continue(executionId: string, input: unknown): Promise<Execution> {
    return this.client.request("POST", `/executions/${segment(executionId)}/continue`, {
      body: { input },
    });
  }

  /** Cancels a PENDING or AWAITING_INPUT execution; `cancelled` says whether it did. */
  cancel(executionId: string): Promise<Execution & { cancelled: boolean }> {
    return this.client.request("POST", `/executions/${segment(executionId)}/cancel`);
  }
}

/** `client.batches`. */
export class BatchesResource {
  constructor(private readonly client: SinasClient) {}

  /** The aggregate: counts from the children, status, times, the batch callback's outcome. */
  get(batchId: string): Promise<Batch> {
    return this.client.request("GET", `/batches/${segment(batchId)}`);
  }

  /** The caller's batches, newest first. */
  list(params: { limit?: number; offset?: number } = {}): Promise<Batch[]> {
    return this.client.request("GET", "/batches", {
      query: { limit: params.limit, offset: params.offset },
    });
  }

  /** One page of children in batch order, as the bare array (as upstream). */
  async listExecutions(
    batchId: string,
    params: ListBatchExecutionsParams = {},
  ): Promise<BatchExecution[]> {
    const page = await this.#page(batchId, params);
    return page.executions;
  }

  /** Every child in batch order, a page at a time. */
  async *iterExecutions(
    batchId: string,
    params: { status?: string; pageSize?: number } = {},
  ): AsyncGenerator<BatchExecution, void, undefined> {
    let offset: number | null = 0;
    while (offset !== null) {
      const page: BatchPage = await this.#page(batchId, {
        status: params.status,
        limit: params.pageSize ?? 500,
        offset,
      });
      yield* page.executions;
      offset = page.next_offset;
    }
  }

  /** Cancels the children that have not started; the batch callback still fires. */
  cancel(batchId: string): Promise<BatchCancelResult> {
    return this.client.request("POST", `/batches/${segment(batchId)}/cancel`);
  }

  /** Polls until every child has ended (the batch has a `finished_at`). */
  wait(batchId: string, options: WaitOptions = {}): Promise<Batch> {
    return poll(
      () => this.get(batchId),
      (document) => document.finished_at !== null && document.finished_at !== undefined,
      options,
      `batch ${batchId}`,
    );
  }

  #page(
    batchId: string,
    params: { status?: string | undefined; limit?: number | undefined; offset?: number | undefined },
  ): Promise<BatchPage> {
    return this.client.request("GET", `/batches/${segment(batchId)}/executions`, {
      query: { status: params.status, limit: params.limit, offset: params.offset },
    });
  }
}

interface BatchPage {
  executions: BatchExecution[];
  total: number;
  next_offset: number | null;
}

/** `client.chats`. */
export class ChatsResource {
  constructor(private readonly client: SinasClient) {}

  /** A chat with its ordered transcript; someone else's answers 404. */
  get(chatId: string): Promise<Chat> {
    return this.client.request("GET", `/chats/${segment(chatId)}`);
  }

  /** The caller's chats without messages, newest first. */
  list(params: { limit?: number; offset?: number } = {}): Promise<Omit<Chat, "messages">[]> {
    return this.client.request("GET", "/chats", {
      query: { limit: params.limit, offset: params.offset },
    });
  }
}

/** A path segment: ids and names never change the path's shape. */
export function segment(value: string): string {
  if (typeof value !== "string" || value === "") {
    throw new TypeError("an id or name must be a non-empty string");
  }
  return encodeURIComponent(value);
}

async function poll<T>(
  read: () => Promise<T>,
  done: (document: T) => boolean,
  options: WaitOptions,
  what: string,
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 300_000);
  const interval = options.intervalMs ?? 500;
  for (;;) {
    const document = await read();
    if (done(document)) {
      return document;
    }
    if (options.signal?.aborted) {
      throw new SinasTimeoutError(`stopped waiting for ${what}`, document);
    }
    if (Date.now() + interval > deadline) {
      throw new SinasTimeoutError(`${what} did not finish in time`, document);
    }
    await sleep(interval);
  }
}

async function readBody(response: Response): Promise<unknown> {
  const text = await response.text();
  let parsed: unknown = text;
  if (text !== "") {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  } else {
    parsed = undefined;
  }
  if (response.ok) {
    return parsed;
  }
  const object = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
  const detail = "detail" in object ? object["detail"] : (parsed ?? response.statusText);
  const reason = typeof object["reason"] === "string" ? object["reason"] : undefined;
  throw new SinasApiError(response.status, detail, parsed, reason);
}

async function discard(response: Response): Promise<void> {
  try {
    await response.arrayBuffer();
  } catch {
    // The body is thrown away; a broken one changes nothing.
  }
}

function backoff(attempt: number): number {
  return RETRY_BASE_MS * 2 ** attempt * (0.5 + Math.random() / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message} (${cause.message})` : error.message;
  }
  return String(error);
}
