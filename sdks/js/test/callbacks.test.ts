/** Signed callbacks from the running system, received over HTTPS and checked by verifyWebhook. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { after, before, describe, it } from "node:test";

import {
  enqueueFunction,
  submitFunctionBatch,
  verifyWebhook,
  WebhookVerificationError,
} from "@sinas/sdk";

import { adminClient, createFunction, env, unique } from "./support.js";

interface Delivery {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** Records every POST; waiters resolve when enough reached a path prefix. */
class Receiver {
  readonly deliveries: Delivery[] = [];
  #server: Server | undefined;
  #waiters: (() => void)[] = [];

  async start(port: number): Promise<void> {
    this.#server = createServer(
      { cert: readFileSync(env("SINAS_TEST_TLS_CERT")), key: readFileSync(env("SINAS_TEST_TLS_KEY")) },
      (request, response) => {
        const chunks: Buffer[] = [];
        request.on("data", (chunk: Buffer) => chunks.push(chunk));
        request.on("end", () => {
          this.deliveries.push({ path: request.url ?? "", headers: request.headers, body: Buffer.concat(chunks) });
          response.writeHead(204).end();
          for (const wake of this.#waiters.splice(0)) {
            wake();
          }
        });
      },
    );
    await new Promise<void>((resolve) => this.#server!.listen(port, "127.0.0.1", resolve));
  }

  async stop(): Promise<void> {
    this.#server!.closeAllConnections();
    await new Promise((resolve) => this.#server!.close(resolve));
  }

  to(prefix: string): Delivery[] {
    return this.deliveries.filter((delivery) => delivery.path.startsWith(prefix));
  }

  async waitFor(prefix: string, count: number, timeoutMs = 120_000): Promise<Delivery[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.to(prefix).length < count) {
      assert.ok(Date.now() < deadline, `expected ${count} callbacks to ${prefix}, got ${this.to(prefix).length}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 500);
      });
    }
    return this.to(prefix);
  }
}

describe("callbacks", () => {
  const admin = adminClient();
  const receiver = new Receiver();
  const port = Number(env("SINAS_TEST_CALLBACK_PORT"));
  const secret = env("SINAS_WEBHOOK_SECRET");
  const url = (path: string): string => `https://localhost:${port}${path}`;
  let ref: string;

  before(async () => {
    await receiver.start(port);
    ref = await createFunction(admin);
  });
  after(() => receiver.stop());

  it("a per-execution callback verifies and carries the outcome", async () => {
    const run = unique("one");
    const queued = await enqueueFunction(admin, ref, { n: 5 }, { callbackUrl: url(`/exec/${run}`) });
    const [delivery] = await receiver.waitFor(`/exec/${run}`, 1);
    const payload = await verifyWebhook<Record<string, unknown>>(delivery!.headers, delivery!.body, secret);
    assert.equal(payload["execution_id"], queued.executionId);
    assert.equal(payload["status"], "success");
    assert.deepEqual(payload["result"], { echo: { n: 5 }, batch_id: null });

    const tampered = Buffer.from(delivery!.body.toString("utf8").replace('"n": 5', '"n": 6').replace('"n":5', '"n":6'));
    assert.notDeepEqual(tampered, delivery!.body);
    await assert.rejects(verifyWebhook(delivery!.headers, tampered, secret), WebhookVerificationError);
  });

  it("a batch posts one verified callback per child and one verified summary", async () => {
    const run = unique("batch");
    const submitted = await submitFunctionBatch(
      admin,
      ref,
      Array.from({ length: 10 }, (_, n) => ({ n, fail: n === 9 })),
      { callbackUrl: url(`/child/${run}`), batchCallbackUrl: url(`/summary/${run}`) },
    );
    const [summary] = await receiver.waitFor(`/summary/${run}`, 1);
    const body = await verifyWebhook<Record<string, unknown>>(summary!.headers, summary!.body, secret);
    assert.equal(body["batch_id"], submitted.batchId);
    assert.deepEqual([body["status"], body["total"], body["completed"], body["failed"]], ["partial", 10, 9, 1]);

    const children = await receiver.waitFor(`/child/${run}`, 10);
    const payloads = await Promise.all(
      children.map((child) => verifyWebhook<Record<string, unknown>>(child.headers, child.body, secret)),
    );
    assert.deepEqual(payloads.map((p) => p["execution_id"]).sort(), [...submitted.executionIds].sort());
    assert.equal(payloads.filter((p) => p["status"] === "failure").length, 1);
  });
});
