/** Errors the SDK throws. */

/** A field error in a 422 `detail` list. */
export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/**
 * The API answered with an error status.
 *
 * `detail` is the body's `detail` as sent: a message, or a list of field errors for 422.
 * `reason` is the runtime's stable reason string, when the body carries one.
 */
export class SinasApiError extends Error {
  override readonly name: string = "SinasApiError";
  readonly status: number;
  readonly detail: string | FieldError[] | unknown;
  readonly reason: string | undefined;
  readonly body: unknown;

  constructor(status: number, detail: unknown, body: unknown, reason?: string) {
    super(messageOf(status, detail));
    this.status = status;
    this.detail = detail;
    this.body = body;
    this.reason = reason;
  }
}

/** No answer arrived: the network failed or the request outlived its timeout. */
export class SinasConnectionError extends Error {
  override readonly name: string = "SinasConnectionError";
  /** True for network failures (safe to retry an idempotent call), false for timeouts. */
  readonly retryable: boolean;

  constructor(message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message);
    this.retryable = options.retryable ?? true;
    if (options.cause !== undefined) {
      (this as { cause?: unknown }).cause = options.cause;
    }
  }
}

/** `wait` gave up before the execution or batch finished. */
export class SinasTimeoutError extends Error {
  override readonly name: string = "SinasTimeoutError";
  /** The last document read before giving up. */
  readonly last: unknown;

  constructor(message: string, last: unknown) {
    super(message);
    this.last = last;
  }
}

/** A callback's signature, timestamp or headers did not check out. */
export class WebhookVerificationError extends Error {
  override readonly name: string = "WebhookVerificationError";
}

function messageOf(status: number, detail: unknown): string {
  if (typeof detail === "string" && detail !== "") {
    return detail;
  }
  if (Array.isArray(detail)) {
    const parts = detail.map((item) => {
      const field = item as Partial<FieldError>;
      const where = Array.isArray(field.loc) ? field.loc.join(".") : "";
      return where ? `${where}: ${String(field.msg)}` : String(field.msg);
    });
    return parts.join("; ") || `HTTP ${status}`;
  }
  return `HTTP ${status}`;
}
