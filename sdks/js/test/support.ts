/** What the tests share: the system under test from the environment, and factories on it. */

import { randomUUID } from "node:crypto";

import { SinasClient } from "@sinas/sdk";

/** A variable the test run must set (the pytest wrapper sets them all). */
export function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} must be set: these tests run against a running system`);
  }
  return value;
}

export const baseUrl = (): string => env("SINAS_BASE_URL");

/** A client holding the admin key. */
export function adminClient(): SinasClient {
  return new SinasClient({ baseUrl: baseUrl(), apiKey: env("SINAS_API_KEY") });
}

export function unique(prefix: string): string {
  return `${prefix}_${randomUUID().replace(/-/g, "").slice(0, 10)}`;
}

export const ECHO_CODE = [
  "def handler(input_data, context):",
  "    if input_data.get('fail'):",
  "        raise ValueError('asked to fail')",
  "    return {'echo': input_data, 'batch_id': context['batch_id']}",
  "",
].join("\n");

/** Defines a function with an open schema; returns its "ns/name" reference. */
export async function createFunction(admin: SinasClient, code: string = ECHO_CODE): Promise<string> {
  const namespace = unique("js");
  const name = unique("fn");
  await admin.request("POST", "/api/v1/functions", {
    body: {
      namespace,
      name,
      code,
      input_schema: {
        type: "object",
        properties: { n: { type: "integer" }, fail: { type: "boolean" } },
        required: ["n"],
      },
      output_schema: { type: "object" },
    },
  });
  return `${namespace}/${name}`;
}

/** A user holding these permissions and a client with the user's own API key. */
export async function createUser(
  admin: SinasClient,
  permissions: string[],
): Promise<{ id: string; email: string; key: string; client: SinasClient }> {
  const role = unique("role");
  await admin.request("POST", "/api/v1/roles", { body: { name: role, permissions } });
  const email = `${unique("user")}@example.com`;
  const user = await admin.request<{ id: string }>("POST", "/api/v1/users", {
    body: { email, roles: [role] },
  });
  const created = await admin.request<{ key: string }>("POST", "/api/v1/api-keys", {
    body: { name: "js sdk test", user_id: user.id },
  });
  return {
    id: user.id,
    email,
    key: created.key,
    client: new SinasClient({ baseUrl: baseUrl(), apiKey: created.key }),
  };
}
