/** Checks the Standard Webhooks signature on a callback (HMAC-SHA256 via Web Crypto). */

import { WebhookVerificationError } from "./errors.js";

/** A Fetch `Headers`, or a plain object such as Node's `IncomingHttpHeaders`. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

/** The raw body exactly as received: verification fails on re-serialised JSON. */
export type WebhookBody = string | ArrayBuffer | ArrayBufferView;

export interface VerifyWebhookOptions {
  /** How far the `webhook-timestamp` may be from now, either way; default 300 s. */
  toleranceSeconds?: number;
  /** "Now" in Unix seconds; default the clock. */
  now?: number;
}

const SECRET_PREFIX = "whsec_";
const DEFAULT_TOLERANCE_SECONDS = 300;

/**
 * Verifies a callback and returns its parsed JSON payload.
 *
 * `secret` is the instance's `CALLBACK_SIGNING_SECRET` (`whsec_<base64>`). Throws
 * WebhookVerificationError when a header is missing, the timestamp is outside the
 * tolerance (replays), or no `v1` signature matches.
 */
export async function verifyWebhook<T = unknown>(
  headers: WebhookHeaders,
  body: WebhookBody,
  secret: string,
  options: VerifyWebhookOptions = {},
): Promise<T> {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!/^\d+$/.test(timestamp)) {
    throw new WebhookVerificationError("webhook-timestamp is not a Unix time in seconds");
  }
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (Math.abs(now - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError("webhook-timestamp is outside the tolerance");
  }
  const subtle = await subtleCrypto();
  const key = await subtle.importKey(
    "raw",
    secretKey(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const payload = bytesOf(body);
  const prefix = new TextEncoder().encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + payload.length);
  signed.set(prefix, 0);
  signed.set(payload, prefix.length);
  for (const entry of signatures.split(" ")) {
    const [version, encoded] = entry.split(",", 2);
    if (version !== "v1" || !encoded) {
      continue;
    }
    const candidate = base64Bytes(encoded);
    // subtle.verify compares in constant time.
    if (candidate && (await subtle.verify("HMAC", key, candidate, signed))) {
      try {
        return JSON.parse(new TextDecoder().decode(payload)) as T;
      } catch {
        throw new WebhookVerificationError("the signed body is not JSON");
      }
    }
  }
  throw new WebhookVerificationError("no webhook-signature matches");
}

function header(headers: WebhookHeaders, name: string): string {
  let value: string | string[] | null | undefined;
  if (typeof (headers as Headers).get === "function") {
    value = (headers as Headers).get(name);
  } else {
    const record = headers as Record<string, string | string[] | undefined>;
    const key = Object.keys(record).find((candidate) => candidate.toLowerCase() === name);
    value = key === undefined ? undefined : record[key];
  }
  if (Array.isArray(value)) {
    value = value.join(" ");
  }
  if (typeof value !== "string" || value.trim() === "") {
    throw new WebhookVerificationError(`missing ${name} header`);
  }
  return value.trim();
}

function secretKey(secret: string): Uint8Array<ArrayBuffer> {
  if (typeof secret !== "string" || secret === "") {
    throw new TypeError("the webhook secret must be a whsec_<base64> string");
  }
  const key = base64Bytes(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret);
  if (!key || key.length === 0) {
    throw new TypeError("the webhook secret is not valid base64 after whsec_");
  }
  return key;
}

function base64Bytes(encoded: string): Uint8Array<ArrayBuffer> | undefined {
  let binary: string;
  try {
    binary = atob(encoded);
  } catch {
    return undefined;
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

function bytesOf(body: WebhookBody): Uint8Array {
  if (typeof body === "string") {
    return new TextEncoder().encode(body);
  }
  if (body instanceof ArrayBuffer) {
    return new Uint8Array(body);
  }
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }
  throw new TypeError("the webhook body must be a string, ArrayBuffer or typed array");
}

async function subtleCrypto(): Promise<SubtleCrypto> {
  const global = globalThis.crypto as Crypto | undefined;
  if (global?.subtle) {
    return global.subtle;
  }
  // Node 18 keeps Web Crypto off the global object unless a flag is set; the specifier is a
  // variable so browser bundlers leave the import alone.
  const builtin = "node:crypto";
  const module = (await import(/* webpackIgnore: true */ /* @vite-ignore */ builtin)) as {
    webcrypto: Crypto;
  };
  return module.webcrypto.subtle;
}
