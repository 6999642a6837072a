/**
 * IP addresses and ranges, for allow-lists and PROXY protocol headers.
 *
 * @module
 */

/** An IPv4 or IPv6 address as 16 bytes, IPv4 mapped to ::ffff:a.b.c.d; null if malformed. */
export function parseIp(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p) => p > 255)) return null;
    out[10] = out[11] = 0xff;
    out.set(parts, 12);
    return out;
  }
  if (!text.includes(":")) return null;
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail4 = parseIp(text.slice(lastColon + 1));
    if (tail4 === null) return null;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const words = (part: string) => part === "" ? [] : part.split(":");
  const left = words(halves[0]);
  const right = halves.length === 2 ? words(halves[1]) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...left, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...right];
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(all[i])) return null;
    const word = parseInt(all[i], 16);
    out[i * 2] = word >> 8;
    out[i * 2 + 1] = word & 0xff;
  }
  if (tail4) out.set(tail4.subarray(12), 12);
  return out;
}

/** Whether 16 address bytes are an IPv4 address mapped into IPv6 (::ffff:a.b.c.d). */
export function isMappedIpv4(bytes: Uint8Array): boolean {
  return bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
}

/** An address range: the address as 16 bytes (IPv4 mapped into IPv6) and the prefix length over those. */
export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

/** Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address; null if malformed. */
export function parseCidr(text: string): Cidr | null {
  const [address, prefixText, extra] = text.trim().split("/");
  if (extra !== undefined) return null;
  const bytes = parseIp(address);
  if (bytes === null) return null;
  const v4 = !address.includes(":");
  const max = v4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return null;
  return { bytes, prefix: v4 ? prefix + 96 : prefix };
}

/** Whether `address` (IPv4, IPv6 or IPv4-mapped IPv6) lies in `range`. */
export function cidrContains(range: Cidr, address: string): boolean {
  const bytes = parseIp(address);
  if (bytes === null) return false;
  for (let bit = 0; bit < range.prefix; bit += 8) {
    const bits = Math.min(8, range.prefix - bit);
    const mask = (0xff << (8 - bits)) & 0xff;
    if ((bytes[bit / 8] & mask) !== (range.bytes[bit / 8] & mask)) return false;
  }
  return true;
}
