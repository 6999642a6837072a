/**
 * PROXY protocol headers (HAProxy's spec, versions 1 and 2), which a relay
 * sends to its destination first so the service sees the real client address.
 *
 * @module
 */

import type { ProxyVersion } from "./config.ts";
import { isMappedIpv4, parseIp } from "./ip.ts";
import type { Addr } from "./transport/types.ts";

const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/**
 * Builds a PROXY header for a TCP connection from `source` to `destination`.
 * Addresses that are not IP literals give the "unknown"/LOCAL form, which
 * tells the service to use the connection's own address.
 *
 * @param version `v1` (text) or `v2` (binary)
 */
export function proxyHeader(version: ProxyVersion, source: Addr, destination: Addr): Uint8Array {
  const src = ipBytes(source.hostname);
  const dst = ipBytes(destination.hostname);
  const family = src && dst && src.length === dst.length ? (src.length === 4 ? 4 : 6) : null;
  if (version === "v1") {
    const line = family === null
      ? "PROXY UNKNOWN\r\n"
      : `PROXY TCP${family} ${plain(source.hostname)} ${
        plain(destination.hostname)
      } ${source.port} ${destination.port}\r\n`;
    return new TextEncoder().encode(line);
  }
  const body = family === null
    ? []
    : [...src!, ...dst!, source.port >> 8, source.port & 0xff, destination.port >> 8, destination.port & 0xff];
  const command = family === null ? 0x20 : 0x21; // version 2, LOCAL or PROXY
  const proto = family === null ? 0x00 : family === 4 ? 0x11 : 0x21; // TCP over IPv4 or IPv6
  return new Uint8Array([...V2_SIGNATURE, command, proto, body.length >> 8, body.length & 0xff, ...body]);
}

/** Parses `host:port` or `[v6]:port`, as matchers send a client's address. */
export function parseHostPort(text: string): Addr | null {
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text);
  return match ? { hostname: match[1], port: Number(match[2]) } : null;
}

/** An IP literal as 4 bytes (IPv4, also mapped into IPv6) or 16 (IPv6); null for a name. */
function ipBytes(host: string): number[] | null {
  const bytes = parseIp(host);
  if (bytes === null) return null;
  return [...(isMappedIpv4(bytes) ? bytes.subarray(12) : bytes)];
}

function plain(host: string): string {
  const bytes = parseIp(host);
  return bytes && isMappedIpv4(bytes) ? bytes.subarray(12).join(".") : host;
}
