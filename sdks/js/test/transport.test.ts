/** Retries and re-authentication, against a scripted local HTTP server. */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import {
  enqueueFunction,
  SinasApiError,
  SinasClient,
  SinasConnectionError,
} from "@sinas/sdk";

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  idempotencyKey: string | undefined;
  body: string;
}

/** Answers each request with the next scripted status; records what it got. */
class ScriptedServer {
  readonly seen: Seen[] = [];
  script: number[] = [];
  #server: Server | undefined;
  port = 0;

  async start(): Promise<void> {
    this.#server = createServer(async (request, response) => {
      this.seen.push(await record(request));
      const status = this.script.shift() ?? 200;
      const body =
        status === 200
          ? { execution_id: "exec_1", status: "queued", id: "u1" }
          : { detail: `scripted ${status}`, reason: "SCRIPTED" };
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify(body));
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, "127.0.0.1", resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    await new Promise((resolve) => this.#server!.close(resolve));
  }

  reset(script: number[]): void {
    this.seen.length = 0;
    this.script = script;
  }
}

async function record(request: IncomingMessage): Promise<Seen> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) {
    chunks.push(chunk as Buffer);
  }
  return {
    method: request.method ?? "",
    url: request.url ?? "",
    authorization: request.headers.authorization,
    idempotencyKey: request.headers["idempotency-key"] as string | undefined,
    body: Buffer.concat(chunks).toString("utf8"),
  };
}

describe("transport", () => {
  const server = new ScriptedServer();
  let client: SinasClient;

  before(async () => {
    await server.start();
    client = new SinasClient({ baseUrl: `http://127.0.0.1:${server.port}/`, apiKey: "sk-test" });
  });
  after(() => server.stop());

  it("retries a GET after 503s and sends the key as a bearer", async () => {
    server.reset([503, 503]);
    const me = await client.auth.getMe();
    assert.equal(me.id, "u1");
    assert.equal(server.seen.length, 3);
    assert.ok(server.seen.every((seen) => seen.authorization === "Bearer sk-test"));
    assert.ok(server.seen.every((seen) => seen.url === "/auth/me"));
  });

  it("gives up after maxRetries with the last error", async () => {
    const tight = new SinasClient({
      baseUrl: `http://127.0.0.1:${server.port}`,
      apiKey: "k",
      maxRetries: 1,
    });
    server.reset([503, 503, 503]);
    await assert.rejects(tight.auth.getMe(), (error: unknown) => {
      assert.ok(error instanceof SinasApiError);
      assert.equal(error.status, 503);
      assert.equal(error.detail, "scripted 503");
      assert.equal(error.reason, "SCRIPTED");
      return true;
    });
    assert.equal(server.seen.length, 2);
  });

  it("never repeats a submit without an Idempotency-Key, repeats one with it", async () => {
    server.reset([503]);
    await assert.rejects(enqueueFunction(client, "ns/fn", { a: 1 }), SinasApiError);
    assert.equal(server.seen.length, 1);

    server.reset([503]);
    const queued = await enqueueFunction(client, "ns/fn", { a: 1 }, { idempotencyKey: "k-1" });
    assert.deepEqual(queued, { executionId: "exec_1", status: "queued" });
    assert.equal(server.seen.length, 2);
    assert.deepEqual(
      server.seen.map((seen) => [seen.method, seen.url, seen.idempotencyKey]),
      [
        ["POST", "/functions/ns/fn/execute/async", "k-1"],
        ["POST", "/functions/ns/fn/execute/async", "k-1"],
      ],
    );
    assert.deepEqual(JSON.parse(server.seen[0]!.body), { input: { a: 1 } });
  });

  it("asks onUnauthenticated once on a 401 and retries with the fresh token", async () => {
    let token = "old";
    let asked = 0;
    const session = new SinasClient({
      baseUrl: `http://127.0.0.1:${server.port}`,
      apiKey: "ignored when getAccessToken is given",
      getAccessToken: async () => token,
      onUnauthenticated: () => {
        asked += 1;
        token = "new";
        return true;
      },
    });
    server.reset([401]);
    assert.equal((await session.auth.getMe()).id, "u1");
    assert.equal(asked, 1);
    assert.deepEqual(
      server.seen.map((seen) => seen.authorization),
      ["Bearer old", "Bearer new"],
    );

    server.reset([401, 401]);
    await assert.rejects(session.auth.getMe(), (error: unknown) => {
      assert.ok(error instanceof SinasApiError);
      assert.equal(error.status, 401);
      return true;
    });
    assert.equal(asked, 2);
    assert.equal(server.seen.length, 2);
  });

  it("turns an unreachable server into a SinasConnectionError after retrying", async () => {
    const closed = new ScriptedServer();
    await closed.start();
    const port = closed.port;
    await closed.stop();
    const unreachable = new SinasClient({ baseUrl: `http://127.0.0.1:${port}`, maxRetries: 2 });
    await assert.rejects(unreachable.auth.getMe(), (error: unknown) => {
      assert.ok(error instanceof SinasConnectionError, String(error));
      assert.match(error.message, /GET \/auth\/me failed/);
      return true;
    });
  });

  it("rejects bad references before sending anything", async () => {
    server.reset([]);
    for (const ref of ["fn", "a/b/c", "/fn", "ns/"]) {
      await assert.rejects(enqueueFunction(client, ref, {}), TypeError);
    }
    assert.equal(server.seen.length, 0);
    assert.throws(() => new SinasClient({ baseUrl: "" }), TypeError);
  });
});
