/** Agent batches and chats against the running system and its scripted model. */

import assert from "node:assert/strict";
import { before, describe, it } from "node:test";

import { submitAgentBatch } from "@sinas/sdk";

import { adminClient, env, unique } from "./support.js";

describe("agents", () => {
  const admin = adminClient();
  let ref: string;

  before(async () => {
    const provider = unique("stub");
    await admin.request("POST", "/api/v1/llm-providers", {
      body: { name: provider, base_url: env("SINAS_TEST_LLM_URL"), api_key: "sk-stub", default_model: "stub-model" },
    });
    const namespace = unique("ag");
    await admin.request("POST", "/api/v1/agents", {
      body: {
        namespace,
        name: "summariser",
        llm_provider: provider,
        system_prompt: "You summarise {{ topic }}.",
        input_schema: { type: "object", properties: { topic: { type: "string" } }, required: ["topic"] },
      },
    });
    ref = `${namespace}/summariser`;
  });

  it("submitAgentBatch runs one chat per input; chats.get reads each transcript", async () => {
    const submitted = await submitAgentBatch(
      admin,
      ref,
      [
        { inputVariables: { topic: "ducks" }, message: "first" },
        { inputVariables: { topic: "geese" }, message: "second" },
      ],
      { triggerIdPrefix: "agents" },
    );
    assert.equal(submitted.total, 2);
    assert.equal(submitted.chatIds.length, 2);
    assert.equal(submitted.executionIds.length, 2);
    const finished = await admin.batches.wait(submitted.batchId, { timeoutMs: 120_000, intervalMs: 200 });
    assert.equal(finished.status, "completed");
    assert.equal(finished.kind, "agent");

    const chat = await admin.chats.get(submitted.chatIds[1]!);
    assert.equal(chat.chat_id, submitted.chatIds[1]);
    assert.deepEqual(
      chat.messages.map((message) => [message.role, message.content]),
      [
        ["system", "You summarise geese."],
        ["user", "second"],
        ["assistant", "Echo: second"],
      ],
    );
    const run = await admin.executions.get(submitted.executionIds[1]!);
    assert.equal((run.output_data as { final_message: string }).final_message, "Echo: second");
    const chats = await admin.chats.list({ limit: 1000 });
    assert.ok(chats.some((listed) => listed.chat_id === submitted.chatIds[0]));
  });

  it("a missing template variable is a 422 naming the item", async () => {
    await assert.rejects(submitAgentBatch(admin, ref, [{ message: "no vars" }]), (error: unknown) => {
      assert.ok(error instanceof Error && "status" in error);
      assert.equal((error as { status: number }).status, 422);
      assert.match(error.message, /inputs/);
      return true;
    });
  });
});
