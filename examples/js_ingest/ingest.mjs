// Ingests documents for one user through a Sinas batch: submits them with per-document and
// batch callbacks, receives those callbacks over HTTPS, verifies each signature with the SDK,
// and reports progress until the batch summary arrives.
import { readFileSync } from "node:fs";
import { createServer } from "node:https";

import {
  SinasClient,
  getBatch,
  listBatchExecutions,
  submitFunctionBatch,
  verifyWebhook,
} from "@sinas/sdk";

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    console.error(`set ${name} (see README.md)`);
    process.exit(2);
  }
  return value;
}

const client = new SinasClient({
  baseUrl: setting("SINAS_BASE_URL"),
  apiKey: setting("SINAS_API_KEY"),
});
const secret = setting("SINAS_WEBHOOK_SECRET");
const functionRef = setting("INGEST_FUNCTION", "docs/ingest");
const port = Number(setting("CALLBACK_PORT", "8443"));
const publicBase = setting("CALLBACK_BASE_URL", `https://localhost:${port}`);
const documentCount = Number(setting("DOCUMENT_COUNT", "50"));
const timeoutMs = Number(setting("INGEST_TIMEOUT_SECONDS", "300")) * 1000;

/** The documents to ingest; a real app would read them from its own storage. */
function documents(count) {
  const topics = ["invoices", "contracts", "meeting notes", "research", "support tickets"];
  return Array.from({ length: count }, (_, i) => {
    const topic = topics[i % topics.length];
    return {
      id: `doc-${String(i + 1).padStart(3, "0")}`,
      title: `${topic} #${i + 1}`,
      text: `This document about ${topic} is number ${i + 1}. `.repeat((i % 7) + 1),
    };
  });
}

const state = {
  batchId: undefined,
  indexed: 0,
  failed: 0,
  words: 0,
  seen: new Set(),
  rejected: 0,
  summary: undefined,
};
let finish;
const finished = new Promise((resolve) => (finish = resolve));

function report() {
  const done = state.indexed + state.failed;
  console.log(
    `progress ${done}/${documentCount} documents (${state.indexed} indexed, ${state.failed} failed)`,
  );
}

async function onCallback(path, headers, body) {
  let payload;
  try {
    payload = await verifyWebhook(headers, body, secret);
  } catch (error) {
    state.rejected += 1;
    console.log(`rejected a callback to ${path}: ${error.message}`);
    return 401;
  }
  if (path === "/callbacks/document") {
    // Deliveries can repeat after a retry; count each execution once.
    if (!state.seen.has(payload.execution_id)) {
      state.seen.add(payload.execution_id);
      if (payload.status === "success") {
        state.indexed += 1;
        state.words += payload.result.words;
      } else {
        state.failed += 1;
        console.log(`document failed: ${payload.trigger_id}: ${payload.error}`);
      }
      report();
    }
  } else if (path === "/callbacks/batch") {
    state.summary = payload;
    console.log(`batch ${payload.batch_id} ended ${payload.status}`);
  } else {
    return 404;
  }
  maybeFinish();
  return 204;
}

function maybeFinish() {
  // The summary can overtake the last per-document callbacks: wait for both.
  if (state.summary && state.seen.size >= state.summary.total - state.summary.cancelled) {
    finish();
  }
}

const server = createServer(
  { cert: readFileSync(setting("TLS_CERT_FILE")), key: readFileSync(setting("TLS_KEY_FILE")) },
  (request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", async () => {
      // The raw bytes, exactly as signed: never re-serialise before verifying.
      const status = request.method === "POST"
        ? await onCallback(new URL(request.url, "https://x").pathname, request.headers, Buffer.concat(chunks))
        : 405;
      response.writeHead(status).end();
    });
  },
);
await new Promise((resolve) => server.listen(port, resolve));
console.log(`listening on ${publicBase}`);

const me = await client.auth.getMe();
const submitted = await submitFunctionBatch(client, functionRef, documents(documentCount), {
  triggerIdPrefix: "ingest",
  callbackUrl: `${publicBase}/callbacks/document`,
  batchCallbackUrl: `${publicBase}/callbacks/batch`,
});
state.batchId = submitted.batchId;
console.log(`submitted batch ${submitted.batchId} with ${submitted.total} documents for ${me.email}`);

// Callbacks drive progress; polling the aggregate now and then shows it even if one is lost.
const poller = setInterval(async () => {
  const batch = await getBatch(client, submitted.batchId);
  console.log(
    `batch ${batch.status}: ${batch.completed} completed, ${batch.running} running, ${batch.queued} queued, ${batch.failed} failed`,
  );
}, 5000);
const timer = setTimeout(() => finish("timeout"), timeoutMs);
const outcome = await finished;
clearInterval(poller);
clearTimeout(timer);

const failures = await listBatchExecutions(client, submitted.batchId, { status: "FAILED", limit: 1000 });
const batch = await getBatch(client, submitted.batchId);
server.closeAllConnections();
server.close();
const result = {
  batch_id: submitted.batchId,
  user: me.email,
  total: batch.total,
  completed: batch.completed,
  failed: batch.failed,
  status: batch.status,
  words: state.words,
  verified_document_callbacks: state.seen.size,
  batch_callback_status: state.summary?.status ?? null,
  rejected_callbacks: state.rejected,
  failed_documents: failures.map((child) => child.trigger_id),
};
console.log(`done ${JSON.stringify(result)}`);
process.exit(outcome === "timeout" ? 1 : 0);
