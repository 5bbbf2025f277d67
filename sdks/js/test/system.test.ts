/** The client against the running system: functions, executions, batches, errors. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, it } from "node:test";

import {
  cancelBatch,
  enqueueFunction,
  getBatch,
  listBatchExecutions,
  SinasApiError,
  SinasClient,
  SinasTimeoutError,
  submitFunctionBatch,
  type Execution,
} from "@sinas/sdk";

import { adminClient, baseUrl, createFunction, createUser } from "./support.js";

function apiError(status: number, detail?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof SinasApiError, String(error));
    assert.equal(error.status, status, error.message);
    if (detail) {
      assert.match(error.message, detail);
    }
    return true;
  };
}

describe("against the running system", () => {
  const admin = adminClient();
  let ref: string;

  before(async () => {
    ref = await createFunction(admin);
  });

  it("auth.getMe names the caller", async () => {
    const me = await admin.auth.getMe();
    assert.equal(me.email, "admin@sinas.local");
    assert.ok(Array.isArray(me.roles));
    const bad = new SinasClient({ baseUrl: baseUrl(), apiKey: "sk-not-a-key" });
    await assert.rejects(bad.auth.getMe(), apiError(401));
  });

  it("enqueues, waits and reads an execution", async () => {
    const queued = await enqueueFunction(admin, ref, { n: 7 }, { triggerId: "js-sdk" });
    assert.equal(queued.status, "queued");
    assert.equal(typeof queued.executionId, "string");
    const done = await admin.executions.wait(queued.executionId, { timeoutMs: 60_000, intervalMs: 100 });
    assert.equal(done.status, "COMPLETED");
    assert.deepEqual(done.output_data, { echo: { n: 7 }, batch_id: null });
    assert.equal(done.trigger_id, "js-sdk");
    const again = await admin.executions.get(queued.executionId);
    assert.equal(again.execution_id, queued.executionId);
    const listed = await admin.executions.list({ triggerId: "js-sdk", status: "completed", limit: 1000 });
    assert.ok(listed.some((item: Execution) => item.execution_id === queued.executionId));
  });

  it("answers an Idempotency-Key retry with the first execution", async () => {
    const key = randomUUID();
    const first = await enqueueFunction(admin, ref, { n: 1 }, { idempotencyKey: key });
    const second = await enqueueFunction(admin, ref, { n: 1 }, { idempotencyKey: key });
    assert.equal(second.executionId, first.executionId);
    await assert.rejects(
      enqueueFunction(admin, ref, { n: 2 }, { idempotencyKey: key }),
      apiError(409),
    );
  });

  it("gives up waiting on a delayed execution with a SinasTimeoutError", async () => {
    const queued = await enqueueFunction(admin, ref, { n: 1 }, { delaySeconds: 3600 });
    await assert.rejects(
      admin.executions.wait(queued.executionId, { timeoutMs: 300, intervalMs: 100 }),
      (error: unknown) => {
        assert.ok(error instanceof SinasTimeoutError);
        assert.equal((error.last as Execution).status, "PENDING");
        return true;
      },
    );
    const cancelled = await admin.executions.cancel(queued.executionId);
    assert.equal(cancelled.cancelled, true);
    assert.equal((await admin.executions.wait(queued.executionId)).status, "CANCELLED");
  });

  it("throws SinasApiError with status and detail for 404, 422 and 403", async () => {
    const [namespace] = ref.split("/");
    await assert.rejects(enqueueFunction(admin, `${namespace}/missing`, {}), apiError(404));
    await assert.rejects(admin.executions.get("exec_does_not_exist"), apiError(404));
    await assert.rejects(admin.batches.get(randomUUID()), apiError(404));
    await assert.rejects(admin.chats.get(randomUUID()), apiError(404));
    await assert.rejects(enqueueFunction(admin, ref, { n: "seven" }), (error: unknown) => {
      assert.ok(error instanceof SinasApiError);
      assert.equal(error.status, 422);
      assert.ok(Array.isArray(error.detail), JSON.stringify(error.detail));
      assert.match(error.message, /input/);
      return true;
    });
    const reader = await createUser(admin, ["sinas.executions.read:own"]);
    await assert.rejects(enqueueFunction(reader.client, ref, { n: 1 }), apiError(403));
  });

  it("hides another user's execution as 404", async () => {
    const [namespace, name] = ref.split("/");
    const user = await createUser(admin, [
      `sinas.functions/${namespace}/${name}.execute:own`,
      "sinas.executions.read:own",
    ]);
    assert.equal((await user.client.auth.getMe()).email, user.email);
    const mine = await enqueueFunction(user.client, ref, { n: 3 });
    assert.equal((await user.client.executions.wait(mine.executionId)).status, "COMPLETED");
    const theirs = await enqueueFunction(admin, ref, { n: 4 });
    await assert.rejects(user.client.executions.get(theirs.executionId), apiError(404));
  });

  it("submits a function batch and drills into it", async () => {
    const inputs = Array.from({ length: 7 }, (_, n) => ({ n, fail: n === 2 || n === 5 }));
    const submitted = await submitFunctionBatch(admin, ref, inputs, { triggerIdPrefix: "docs" });
    assert.equal(submitted.status, "queued");
    assert.equal(submitted.total, 7);
    assert.equal(new Set(submitted.executionIds).size, 7);

    const finished = await admin.batches.wait(submitted.batchId, { timeoutMs: 120_000, intervalMs: 100 });
    assert.equal(finished.status, "partial");
    assert.deepEqual([finished.completed, finished.failed, finished.total], [5, 2, 7]);
    assert.deepEqual(finished.target, { namespace: ref.split("/")[0], name: ref.split("/")[1] });
    assert.equal((await getBatch(admin, submitted.batchId)).batch_id, submitted.batchId);

    const failed = await listBatchExecutions(admin, submitted.batchId, { status: "FAILED" });
    assert.deepEqual(failed.map((child) => child.index), [2, 5]);
    assert.ok(failed.every((child) => child.status === "failed" && /asked to fail/.test(child.error ?? "")));

    const page = await admin.batches.listExecutions(submitted.batchId, { limit: 3, offset: 3 });
    assert.deepEqual(page.map((child) => child.execution_id), submitted.executionIds.slice(3, 6));

    const all = [];
    for await (const child of admin.batches.iterExecutions(submitted.batchId, { pageSize: 2 })) {
      all.push(child);
    }
    assert.deepEqual(all.map((child) => child.execution_id), submitted.executionIds);
    assert.deepEqual(all.map((child) => child.trigger_id), inputs.map((_, n) => `docs:${n}`));

    const listed = await admin.batches.list({ limit: 1000 });
    assert.ok(listed.some((batch) => batch.batch_id === submitted.batchId));
    const finishedCancel = await cancelBatch(admin, submitted.batchId);
    assert.deepEqual(finishedCancel, { batch_id: submitted.batchId, status: "partial", cancelled_children: 0 });
  });

  it("cancels a delayed batch", async () => {
    const submitted = await submitFunctionBatch(admin, ref, [{ n: 1 }, { n: 2 }, { n: 3 }], {
      delaySeconds: 3600,
      idempotencyKey: randomUUID(),
    });
    const cancelled = await cancelBatch(admin, submitted.batchId);
    assert.deepEqual(cancelled, { batch_id: submitted.batchId, status: "cancelled", cancelled_children: 3 });
    const finished = await admin.batches.wait(submitted.batchId, { timeoutMs: 60_000 });
    assert.equal(finished.cancelled, 3);
  });
});
