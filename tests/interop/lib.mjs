// Shared plumbing for the interop client scripts (pay-v2.mjs, pay-v1.mjs): argument parsing,
// a fetch that records what the official client sends and refuses any host but 127.0.0.1,
// and the one-JSON-line output contract the Rust tests (crates/cli/tests/it/interop.rs) read.
//
// Nothing here builds or decodes x402 messages for the client: the scripts use the official
// libraries for that. The recorder only observes the payment header so tests can check the
// authorization that was signed against the chain and the ledger.

const PAYMENT_HEADER_NAMES = ["payment-signature", "x-payment"];

/** `<gateway-base-url> <payer-private-key> <route-path> [extra...]`, validated. */
export function parseArgs(usage) {
  const [base, key, path, ...extra] = process.argv.slice(2);
  if (!base || !key || !path) {
    throw new Error(`usage: ${usage}`);
  }
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) {
    throw new Error("the payer private key must be 0x + 64 hex digits");
  }
  if (!path.startsWith("/")) {
    throw new Error(`route path must start with '/': ${path}`);
  }
  const url = new URL(path, base);
  assertLoopback(url);
  return { url: url.toString(), key, extra };
}

function assertLoopback(url) {
  // The tests run against local processes only; a typo must not reach the internet.
  if (url.hostname !== "127.0.0.1") {
    throw new Error(`refusing to contact ${url.host}: interop scripts talk only to 127.0.0.1`);
  }
}

/**
 * A fetch for the client to wrap. It records every request it is asked to make (method, URL,
 * the x402 payment header if any, decoded as plain base64 JSON for the report) and the status
 * that came back, and refuses non-loopback URLs.
 */
export function recordingFetch(inner = globalThis.fetch) {
  const requests = [];
  async function fetchAndRecord(input, init) {
    // Build a Request only to read what will be sent; the original arguments go to `inner`
    // unchanged so the client's own request construction is what reaches the gateway.
    const seen = new Request(input, init);
    assertLoopback(new URL(seen.url));
    const rec = { method: seen.method, url: seen.url, paymentHeaderName: null, paymentHeader: null, payment: null, status: null };
    for (const name of PAYMENT_HEADER_NAMES) {
      const raw = seen.headers.get(name);
      if (raw !== null) {
        rec.paymentHeaderName = name;
        rec.paymentHeader = raw;
        try {
          rec.payment = JSON.parse(Buffer.from(raw, "base64").toString("utf8"));
        } catch (e) {
          rec.payment = { undecodable: String(e) };
        }
        break;
      }
    }
    requests.push(rec);
    const res = await inner(input, init);
    rec.status = res.status;
    return res;
  }
  return { fetch: fetchAndRecord, requests };
}

/** All response headers as a plain object with lower-case names. */
export function headersObject(headers) {
  const out = {};
  headers.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

/** Parses `text` as JSON when it is JSON, else returns null. */
export function jsonOrNull(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Runs `main`, prints its result as one JSON line, or the error on stderr with exit code 1. */
export function run(main) {
  main().then(
    (result) => {
      process.stdout.write(JSON.stringify(result) + "\n");
    },
    (e) => {
      const cause = e instanceof Error && e.cause !== undefined ? `\ncaused by: ${e.cause}` : "";
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}${cause}\n`);
      process.exit(1);
    },
  );
}
