/** verifyWebhook against signatures made independently with node:crypto. */

import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { describe, it } from "node:test";

import { verifyWebhook, WebhookVerificationError } from "@sinas/sdk";

const KEY = randomBytes(32);
const SECRET = `whsec_${KEY.toString("base64")}`;
const BODY = JSON.stringify({ execution_id: "exec_1", status: "success", result: { n: 1.5e300 } });

function sign(id: string, timestamp: number, body: string | Buffer, key: Buffer = KEY): string {
  const digest = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest("base64");
  return `v1,${digest}`;
}

function headersFor(body: string, timestamp = Math.floor(Date.now() / 1000)) {
  return {
    "webhook-id": "msg_1",
    "webhook-timestamp": String(timestamp),
    "webhook-signature": sign("msg_1", timestamp, body),
  };
}

async function rejects(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof WebhookVerificationError, String(error));
    assert.match(error.message, message);
    return true;
  });
}

describe("verifyWebhook", () => {
  it("returns the parsed payload of a correctly signed body", async () => {
    const payload = await verifyWebhook(headersFor(BODY), BODY, SECRET);
    assert.deepEqual(payload, JSON.parse(BODY));
  });

  it("takes Fetch Headers, Node's header objects in any case, and byte bodies", async () => {
    const plain = headersFor(BODY);
    const fetchHeaders = new Headers(plain);
    assert.deepEqual(await verifyWebhook(fetchHeaders, BODY, SECRET), JSON.parse(BODY));
    const shouting = Object.fromEntries(
      Object.entries(plain).map(([name, value]) => [name.toUpperCase(), value]),
    );
    const bytes = new TextEncoder().encode(BODY);
    assert.deepEqual(await verifyWebhook(shouting, bytes, SECRET), JSON.parse(BODY));
    assert.deepEqual(await verifyWebhook(plain, Buffer.from(BODY), SECRET), JSON.parse(BODY));
    assert.deepEqual(await verifyWebhook(plain, bytes.buffer, SECRET), JSON.parse(BODY));
  });

  it("accepts any one matching signature among several", async () => {
    const headers = headersFor(BODY);
    const stale = sign("msg_1", Number(headers["webhook-timestamp"]), BODY, randomBytes(32));
    headers["webhook-signature"] = `v2,abc ${stale} ${headers["webhook-signature"]}`;
    assert.deepEqual(await verifyWebhook(headers, BODY, SECRET), JSON.parse(BODY));
  });

  it("rejects a body changed by one byte, even re-serialised equal JSON", async () => {
    const headers = headersFor(BODY);
    await rejects(verifyWebhook(headers, BODY.replace("exec_1", "exec_2"), SECRET), /no webhook-signature/);
    const reserialised = JSON.stringify(JSON.parse(BODY), null, 1);
    await rejects(verifyWebhook(headers, reserialised, SECRET), /no webhook-signature/);
  });

  it("rejects another secret and another message id", async () => {
    const other = `whsec_${randomBytes(32).toString("base64")}`;
    await rejects(verifyWebhook(headersFor(BODY), BODY, other), /no webhook-signature/);
    const headers = { ...headersFor(BODY), "webhook-id": "msg_2" };
    await rejects(verifyWebhook(headers, BODY, SECRET), /no webhook-signature/);
  });

  it("rejects timestamps outside the tolerance either way, and honours a custom one", async () => {
    const now = Math.floor(Date.now() / 1000);
    await rejects(verifyWebhook(headersFor(BODY, now - 301), BODY, SECRET), /tolerance/);
    await rejects(verifyWebhook(headersFor(BODY, now + 301), BODY, SECRET), /tolerance/);
    const old = headersFor(BODY, now - 3600);
    assert.ok(await verifyWebhook(old, BODY, SECRET, { toleranceSeconds: 3700 }));
    assert.ok(await verifyWebhook(old, BODY, SECRET, { now: now - 3600 }));
  });

  it("rejects missing or malformed headers", async () => {
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
      const headers: Record<string, string> = headersFor(BODY);
      delete headers[name];
      await rejects(verifyWebhook(headers, BODY, SECRET), new RegExp(`missing ${name}`));
    }
    const headers = { ...headersFor(BODY), "webhook-timestamp": "12.5" };
    await rejects(verifyWebhook(headers, BODY, SECRET), /Unix time/);
    const garbled = { ...headersFor(BODY), "webhook-signature": "v1,not base64!!" };
    await rejects(verifyWebhook(garbled, BODY, SECRET), /no webhook-signature/);
  });

  it("refuses an unusable secret with a TypeError", async () => {
    await assert.rejects(verifyWebhook(headersFor(BODY), BODY, "whsec_"), TypeError);
    await assert.rejects(verifyWebhook(headersFor(BODY), BODY, "whsec_***"), TypeError);
  });
});
