/** @sinas/sdk: a client for the Sinas async job runtime. */

export {
  AuthResource,
  BatchesResource,
  ChatsResource,
  ExecutionsResource,
  SinasClient,
  type AccessTokenProvider,
  type RequestOptions,
  type SinasClientOptions,
} from "./client.js";
export {
  SinasApiError,
  SinasConnectionError,
  SinasTimeoutError,
  WebhookVerificationError,
  type FieldError,
} from "./errors.js";
export {
  cancelBatch,
  enqueueFunction,
  getBatch,
  listBatchExecutions,
  parseRef,
  submitAgentBatch,
  submitFunctionBatch,
  type AgentBatchInput,
  type AgentBatchResult,
  type BatchOptions,
  type EnqueueOptions,
  type EnqueueResult,
  type FunctionBatchResult,
} from "./helpers.js";
export type * from "./types.js";
export {
  verifyWebhook,
  type VerifyWebhookOptions,
  type WebhookBody,
  type WebhookHeaders,
} from "./webhooks.js";
