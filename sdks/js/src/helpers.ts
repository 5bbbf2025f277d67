/** Free functions taking the client first and "ns/name" references, as upstream's SDK. */

import { segment, type SinasClient } from "./client.js";
import type { Batch, BatchCancelResult, BatchExecution, ListBatchExecutionsParams } from "./types.js";

export interface EnqueueOptions {
  /** Correlation id stored on the execution (default "runtime-api"). */
  triggerId?: string;
  /** Run no earlier than this many seconds from now. */
  delaySeconds?: number;
  /** HTTPS URL that receives the signed outcome. */
  callbackUrl?: string;
  /** Makes the submit safe to retry: the same key and body answer the first response. */
  idempotencyKey?: string;
}

export interface EnqueueResult {
  executionId: string;
  status: "queued";
}

export interface BatchOptions {
  /** Child i gets trigger id "{prefix}:{i}" (default "batch:{i}"). */
  triggerIdPrefix?: string;
  delaySeconds?: number;
  /** Receives each child's outcome. */
  callbackUrl?: string;
  /** Receives one summary once every child has ended. */
  batchCallbackUrl?: string;
  idempotencyKey?: string;
}

export interface FunctionBatchResult {
  batchId: string;
  /** In input order. */
  executionIds: string[];
  total: number;
  status: "queued";
}

export interface AgentBatchInput {
  /** The agent's template variables. */
  inputVariables?: Record<string, unknown>;
  message: string;
}

export interface AgentBatchResult extends FunctionBatchResult {
  /** One fresh chat per child, in input order. */
  chatIds: string[];
}

/** Splits "ns/name"; anything else is a TypeError. */
export function parseRef(ref: string): { namespace: string; name: string } {
  const parts = typeof ref === "string" ? ref.split("/") : [];
  const [namespace, name] = parts;
  if (parts.length !== 2 || !namespace || !name) {
    throw new TypeError(`expected a "namespace/name" reference, got ${JSON.stringify(ref)}`);
  }
  return { namespace, name };
}

/** Enqueues one run of a function: POST /functions/{ns}/{name}/execute/async. */
export async function enqueueFunction(
  client: SinasClient,
  ref: string,
  input: Record<string, unknown> = {},
  options: EnqueueOptions = {},
): Promise<EnqueueResult> {
  const reply = await client.request<{ execution_id: string; status: "queued" }>(
    "POST",
    `${targetPath("functions", ref)}/execute/async`,
    {
      body: compact({
        input,
        trigger_id: options.triggerId,
        delay_seconds: options.delaySeconds,
        callback_url: options.callbackUrl,
      }),
      headers: idempotencyHeader(options.idempotencyKey),
    },
  );
  return { executionId: reply.execution_id, status: reply.status };
}

/** Submits one run per input, all stored together: POST .../execute/batch. */
export async function submitFunctionBatch(
  client: SinasClient,
  ref: string,
  inputs: Record<string, unknown>[],
  options: BatchOptions = {},
): Promise<FunctionBatchResult> {
  const reply = await client.request<BatchReply>(
    "POST",
    `${targetPath("functions", ref)}/execute/batch`,
    { body: batchBody(inputs, options), headers: idempotencyHeader(options.idempotencyKey) },
  );
  return functionBatchResult(reply);
}

/** Starts one agent run in a fresh chat per input: POST /agents/{ns}/{name}/chats/batch. */
export async function submitAgentBatch(
  client: SinasClient,
  ref: string,
  inputs: AgentBatchInput[],
  options: BatchOptions = {},
): Promise<AgentBatchResult> {
  const items = inputs.map((item) => ({
    input_variables: item.inputVariables ?? {},
    message: item.message,
  }));
  const reply = await client.request<BatchReply & { chat_ids: string[] }>(
    "POST",
    `${targetPath("agents", ref)}/chats/batch`,
    { body: batchBody(items, options), headers: idempotencyHeader(options.idempotencyKey) },
  );
  return { ...functionBatchResult(reply), chatIds: reply.chat_ids };
}

/** The batch aggregate, as `client.batches.get`. */
export function getBatch(client: SinasClient, batchId: string): Promise<Batch> {
  return client.batches.get(batchId);
}

/** One page of a batch's children as an array, as `client.batches.listExecutions`. */
export function listBatchExecutions(
  client: SinasClient,
  batchId: string,
  params: ListBatchExecutionsParams = {},
): Promise<BatchExecution[]> {
  return client.batches.listExecutions(batchId, params);
}

/** Cancels a batch's children that have not started, as `client.batches.cancel`. */
export function cancelBatch(client: SinasClient, batchId: string): Promise<BatchCancelResult> {
  return client.batches.cancel(batchId);
}

interface BatchReply {
  batch_id: string;
  execution_ids: string[];
  total: number;
  status: "queued";
}

function functionBatchResult(reply: BatchReply): FunctionBatchResult {
  return {
    batchId: reply.batch_id,
    executionIds: reply.execution_ids,
    total: reply.total,
    status: reply.status,
  };
}

function batchBody(inputs: unknown[], options: BatchOptions): Record<string, unknown> {
  return compact({
    inputs,
    trigger_id_prefix: options.triggerIdPrefix,
    delay_seconds: options.delaySeconds,
    callback_url: options.callbackUrl,
    batch_callback_url: options.batchCallbackUrl,
  });
}

function targetPath(kind: "functions" | "agents", ref: string): string {
  const { namespace, name } = parseRef(ref);
  return `/${kind}/${segment(namespace)}/${segment(name)}`;
}

function idempotencyHeader(key: string | undefined): Record<string, string> {
  return key === undefined ? {} : { "Idempotency-Key": key };
}

/** Only the options that were given, as upstream sends them. */
function compact(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== undefined));
}
