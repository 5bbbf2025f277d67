/** Documents the REST API returns, with the runtime's own (snake_case) field names. */

export type ExecutionStatus =
  | "PENDING"
  | "RUNNING"
  | "AWAITING_INPUT"
  | "COMPLETED"
  | "FAILED"
  | "CANCELLED";

export type BatchStatus = "queued" | "running" | "completed" | "partial" | "failed" | "cancelled";

export type CallbackStatus = "pending" | "in_flight" | "sent" | "failed";

/** `GET /auth/me`. */
export interface AuthUser {
  id: string;
  email: string;
  roles: string[];
  created_at: string | null;
  last_login_at: string | null;
}

/** `GET /executions/{id}`. */
export interface Execution {
  execution_id: string;
  namespace: string;
  function_name: string;
  status: ExecutionStatus;
  input_data: unknown;
  output_data: unknown;
  error: string | null;
  traceback: string | null;
  trigger_type: string | null;
  trigger_id: string | null;
  batch_id: string | null;
  chat_id: string | null;
  created_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  duration_ms: number | null;
  attempts: number;
  callback_url: string | null;
  callback_status: CallbackStatus | null;
  callback_response_code: number | null;
  callback_error: string | null;
  input_prompt: string | null;
  input_deadline_at: string | null;
  [field: string]: unknown;
}

/** `GET /batches/{id}`: counts come from the children. */
export interface Batch {
  batch_id: string;
  kind: string;
  target: { namespace: string; name: string };
  user_id: string;
  total: number;
  queued: number;
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
  status: BatchStatus;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  cancelled_at: string | null;
  trigger_id_prefix: string | null;
  callback_url: string | null;
  batch_callback_url: string | null;
  batch_callback_status: CallbackStatus | null;
  batch_callback_response_code: number | null;
  [field: string]: unknown;
}

/** One child in `GET /batches/{id}/executions`; its status is lower case. */
export interface BatchExecution {
  execution_id: string;
  index: number | null;
  status: string;
  function_name: string;
  trigger_id: string | null;
  chat_id: string | null;
  created_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  duration_ms: number | null;
  error: string | null;
}

/** `POST /batches/{id}/cancel`. */
export interface BatchCancelResult {
  batch_id: string;
  status: BatchStatus;
  cancelled_children: number;
}

/** One transcript message of a chat. */
export interface ChatMessage {
  id: string;
  role: "system" | "user" | "assistant" | "tool";
  content: string | null;
  tool_calls: Record<string, unknown>[] | null;
  tool_call_id: string | null;
  created_at: string | null;
}

/** `GET /chats/{id}`. */
export interface Chat {
  id: string;
  chat_id: string;
  user_id: string;
  agent_namespace: string;
  agent_name: string;
  title: string | null;
  input_variables: Record<string, unknown> | null;
  created_at: string | null;
  updated_at: string | null;
  messages: ChatMessage[];
}

/** Filters of `GET /executions`. */
export interface ListExecutionsParams {
  functionName?: string;
  /** Either case. */
  status?: ExecutionStatus | Lowercase<ExecutionStatus>;
  triggerId?: string;
  batchId?: string;
  limit?: number;
  offset?: number;
}

/** Filters of `GET /batches/{id}/executions`. */
export interface ListBatchExecutionsParams {
  /** Either case, e.g. "FAILED" or "failed". */
  status?: string;
  limit?: number;
  offset?: number;
}

/** How `wait` polls. */
export interface WaitOptions {
  /** Give up after this long (default 300 000 ms) with a SinasTimeoutError. */
  timeoutMs?: number;
  /** Pause between reads (default 500 ms). */
  intervalMs?: number;
  /** Stop early, e.g. from an AbortController. */
  signal?: AbortSignal;
}
