/**
 * The admin HTTP listener: `GET /health`, `/stats` and `/metrics`. A minimal
 * HTTP/1.1 server over the Transport contract, so it runs alike everywhere;
 * one request per connection, bounded in size and time.
 *
 * @module
 */

import { withTimeout } from "./async.ts";
import type { Logger } from "./log.ts";
import type { Conn, Listener, Transport } from "./transport/types.ts";

/** A response from an admin route. */
export interface AdminResponse {
  status: number;
  contentType: string;
  body: string;
}

/** Options of {@linkcode startAdmin}. */
export interface AdminOptions {
  transport: Transport;
  hostname: string;
  port: number;
  /** Answers a GET for `path`, or null for 404. */
  route(path: string): AdminResponse | null;
  log: Logger;
}

const MAX_REQUEST = 8 * 1024;
const REQUEST_TIMEOUT = 5_000;
const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  503: "Service Unavailable",
};

/**
 * Starts the admin listener.
 *
 * @returns the listener; close it to stop
 */
export async function startAdmin(options: AdminOptions): Promise<Listener> {
  const listener = await options.transport.listen({ hostname: options.hostname, port: options.port });
  (async () => {
    for (;;) {
      const conn = await listener.accept().catch(() => undefined);
      if (conn === null) return;
      if (conn === undefined) continue;
      serve(conn, options).catch(() => conn.reset());
    }
  })();
  return listener;
}

async function serve(conn: Conn, options: AdminOptions): Promise<void> {
  const head = await withTimeout(readHead(conn), REQUEST_TIMEOUT, "request too slow");
  const [method, target] = head?.split("\r\n")[0].split(" ") ?? [];
  let response: AdminResponse;
  if (!head || !target) response = text(400, "bad request\n");
  else if (method !== "GET" && method !== "HEAD") response = text(405, "only GET\n");
  else response = options.route(target.split("?")[0]) ?? text(404, "not found: try /health, /stats or /metrics\n");
  const body = new TextEncoder().encode(method === "HEAD" ? "" : response.body);
  const header = `HTTP/1.1 ${response.status} ${REASONS[response.status] ?? ""}\r\n` +
    `Content-Type: ${response.contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  await conn.write(new TextEncoder().encode(header));
  if (body.length > 0) await conn.write(body);
  await conn.closeWrite();
  conn.close();
}

/** Reads up to the blank line ending the request head; null if it is malformed or too large. */
async function readHead(conn: Conn): Promise<string | null> {
  let head = "";
  const decoder = new TextDecoder();
  while (!head.includes("\r\n\r\n")) {
    const chunk = await conn.read();
    if (chunk === null || head.length + chunk.length > MAX_REQUEST) return null;
    head += decoder.decode(chunk, { stream: true });
  }
  return head;
}

/** A plain-text response. */
export function text(status: number, body: string): AdminResponse {
  return { status, contentType: "text/plain; charset=utf-8", body };
}

/** A JSON response. */
export function json(status: number, value: unknown): AdminResponse {
  return { status, contentType: "application/json", body: JSON.stringify(value, null, 2) + "\n" };
}
