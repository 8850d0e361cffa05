#!/usr/bin/env node
// Captures x402 wire fixtures from the official npm clients:
//   v2: @x402/fetch + @x402/evm + @x402/core 2.27.0
//   v1: x402-fetch 1.2.0 (x402 1.2.0)
// For each scenario a tiny node:http server on 127.0.0.1:0 answers the first request with an
// HTTP 402 challenge, records the payment header on the retry and answers 200 with a
// settlement receipt header. Every captured EIP-3009 signature is recovered with viem and must
// equal the payer, or the script fails.
//
// Run from the repo root:  node tests/interop/gen-fixtures.mjs
//                     or:  npm --prefix tests run gen-fixtures
// Output: crates/x402/tests/fixtures/*.json (deterministic apart from nonce, time, signature).
//
// Nothing here talks to a chain or to any host but 127.0.0.1: the EVM signer is a local viem
// account, and the v1 wallet client's transport throws if anything tries an RPC call.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { createWalletClient, custom, getAddress, keccak256, toHex, recoverTypedDataAddress, verifyTypedData } from "viem";
import { privateKeyToAccount, mnemonicToAccount } from "viem/accounts";
import { base, baseSepolia } from "viem/chains";

// v2
import { wrapFetchWithPayment, x402Client, x402HTTPClient, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
// v1
import { wrapFetchWithPayment as wrapFetchWithPaymentV1, decodeXPaymentResponse } from "x402-fetch";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TESTS_DIR = path.resolve(HERE, "..");
const REPO = path.resolve(TESTS_DIR, "..");
const OUT_DIR = path.join(REPO, "crates", "x402", "tests", "fixtures");

// ---------------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------------
// anvil / hardhat account #1 of the mnemonic "test test ... junk" (m/44'/60'/0'/0/1).
const PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";
const PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const AMOUNT = "10000"; // 0.01 USDC (6 decimals)
const MAX_TIMEOUT = 60;
const RESOURCE_PATH = "/paid/weather";
// The challenge names a fixed resource URL rather than the ephemeral 127.0.0.1:<port> one so the
// fixtures do not change with the port. No client checks resource against the request URL.
const RESOURCE_URL = "https://tollgate.test/paid/weather";
const DESCRIPTION = "Weather report";
const MIME = "application/json";

const BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const CUSTOM_TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

const TRANSFER_WITH_AUTHORIZATION_TYPES = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
};
const TRANSFER_WITH_AUTHORIZATION_TYPEHASH =
  "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267";
const CHAIN_IDS = { base: 8453, "base-sepolia": 84532 };
const B64_STANDARD = /^[A-Za-z0-9+/]*={0,2}$/;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
function fail(msg) {
  throw new Error(`gen-fixtures: ${msg}`);
}
function assert(cond, msg) {
  if (!cond) fail(msg);
}
const b64 = (s) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s) => Buffer.from(s, "base64").toString("utf8");
const fakeTx = (label) => keccak256(toHex(`tollgate-fixture:${label}`));

function packageVersions() {
  const v = {};
  for (const name of ["@x402/fetch", "@x402/evm", "@x402/core", "x402-fetch", "x402", "viem"]) {
    const pj = path.join(TESTS_DIR, "node_modules", ...name.split("/"), "package.json");
    v[name] = JSON.parse(fs.readFileSync(pj, "utf8")).version;
  }
  return v;
}

// One local account; every signTypedData call stamps the time so fixtures can relate
// validAfter/validBefore to the signing instant. (viem wallet clients with a local account call
// account.signTypedData, so this covers v1 and v2.)
let lastSignedAtUnixS = null;
function makeAccount() {
  const account = privateKeyToAccount(PAYER_KEY);
  const inner = account.signTypedData.bind(account);
  account.signTypedData = async (args) => {
    lastSignedAtUnixS = Date.now() / 1000;
    return inner(args);
  };
  return account;
}

// v2 client exactly as @x402/fetch 2.27 documents it (builder form), plus an optional spend
// controls override and a hook that captures the decoded receipt the client sees.
function makeV2Client({ spendControls } = {}) {
  const account = makeAccount();
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  if (spendControls !== undefined) client.setSpendControls(spendControls);
  const seen = { paymentResponseHookCtx: [] };
  client.onPaymentResponse(async (ctx) => {
    seen.paymentResponseHookCtx.push({
      settleResponse: ctx.settleResponse ?? null,
      paymentRequired: ctx.paymentRequired ?? null,
    });
  });
  const fetchWithPayment = wrapFetchWithPayment(globalThis.fetch, client);
  return { client, httpClient: new x402HTTPClient(client), fetchWithPayment, seen };
}

// v1 client exactly as x402-fetch 1.2.0 documents it: a viem wallet client with the chain set
// (x402-fetch picks requirements whose network matches walletClient.chain).
function noRpcTransport() {
  return custom({
    async request({ method }) {
      fail(`unexpected RPC call ${method} (fixture generation must stay offline)`);
    },
  });
}
function makeV1Client(chain, maxValue) {
  const account = makeAccount();
  const walletClient = createWalletClient({ account, chain, transport: noRpcTransport() });
  const fetchWithPay =
    maxValue === undefined
      ? wrapFetchWithPaymentV1(globalThis.fetch, walletClient)
      : wrapFetchWithPaymentV1(globalThis.fetch, walletClient, maxValue);
  return { walletClient, fetchWithPay };
}

// Tiny server. `respond(n, req)` is called per request (n = 0, 1, ...) and returns
// { status, headers, body }. Every request is recorded with its raw header list.
async function withServer(respond, fn) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const n = requests.length;
      const rawHeaderNames = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) rawHeaderNames.push(req.rawHeaders[i]);
      const rec = {
        method: req.method,
        url: req.url,
        headers: { ...req.headers },
        rawHeaderNames,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      requests.push(rec);
      let out;
      try {
        out = respond(n, rec);
      } catch (e) {
        out = { status: 500, headers: {}, body: String(e) };
      }
      res.writeHead(out.status, out.headers);
      res.end(out.body ?? "");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  try {
    return await fn(`http://127.0.0.1:${port}${RESOURCE_PATH}`, requests);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

function v2Requirement(network, asset, extra) {
  return {
    scheme: "exact",
    network,
    amount: AMOUNT,
    asset,
    payTo: PAY_TO,
    maxTimeoutSeconds: MAX_TIMEOUT,
    extra,
  };
}
function v2PaymentRequired(accepts, error = "Payment required") {
  return {
    x402Version: 2,
    error,
    resource: { url: RESOURCE_URL, description: DESCRIPTION, mimeType: MIME },
    accepts,
  };
}
function v1Requirement(network, asset, extra, { outputSchema } = {}) {
  const r = {
    scheme: "exact",
    network,
    maxAmountRequired: AMOUNT,
    resource: RESOURCE_URL,
    description: DESCRIPTION,
    mimeType: MIME,
    payTo: PAY_TO,
    maxTimeoutSeconds: MAX_TIMEOUT,
    asset,
    extra,
  };
  if (outputSchema !== undefined) r.outputSchema = outputSchema;
  return r;
}
function v1PaymentRequired(accepts, error = "X-PAYMENT header is required") {
  return { x402Version: 1, error, accepts };
}

// 402 responses the way an x402 gateway sends them.
function v2Challenge(pr, { header = true, body = true, v1Body = null } = {}) {
  const headerRaw = b64(JSON.stringify(pr));
  const bodyObj = v1Body ?? (body ? pr : null);
  const bodyRaw = bodyObj ? JSON.stringify(bodyObj) : "";
  const headers = { "Cache-Control": "no-store" };
  if (bodyRaw) headers["Content-Type"] = "application/json";
  if (header) headers["PAYMENT-REQUIRED"] = headerRaw;
  return { status: 402, headers, body: bodyRaw, headerRaw, bodyRaw };
}
function v1Challenge(pr) {
  const bodyRaw = JSON.stringify(pr);
  return {
    status: 402,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
    body: bodyRaw,
    bodyRaw,
  };
}
function paidOk(receiptHeaderName, settle) {
  const raw = b64(JSON.stringify(settle));
  return {
    status: 200,
    headers: { "Content-Type": "application/json", [receiptHeaderName]: raw },
    body: JSON.stringify({ weather: "sunny", temperature: 21 }),
    raw,
  };
}

function findPaymentHeader(req) {
  for (const name of ["payment-signature", "x-payment"]) {
    if (req.headers[name] !== undefined) return { name, raw: req.headers[name] };
  }
  return null;
}

// Recover the EIP-3009 signature and check the authorization against the requirement.
async function verifyCapture({ payload, requirement, chainId, amountField }) {
  const auth = payload.payload.authorization;
  const sig = payload.payload.signature;
  const domain = {
    name: requirement.extra.name,
    version: requirement.extra.version,
    chainId,
    verifyingContract: getAddress(requirement.asset),
  };
  const message = {
    from: auth.from,
    to: auth.to,
    value: BigInt(auth.value),
    validAfter: BigInt(auth.validAfter),
    validBefore: BigInt(auth.validBefore),
    nonce: auth.nonce,
  };
  const typed = { domain, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization", message };
  const recovered = await recoverTypedDataAddress({ ...typed, signature: sig });
  const ok = await verifyTypedData({ ...typed, address: PAYER, signature: sig });
  assert(recovered === PAYER, `signature recovers to ${recovered}, expected ${PAYER}`);
  assert(ok, "verifyTypedData returned false");
  assert(getAddress(auth.from) === PAYER, `authorization.from ${auth.from} != payer`);
  assert(getAddress(auth.to) === getAddress(requirement.payTo), `authorization.to ${auth.to} != payTo`);
  assert(auth.value === requirement[amountField], `authorization.value ${auth.value} != ${requirement[amountField]}`);
  assert(/^0x[0-9a-f]{64}$/.test(auth.nonce), `nonce ${auth.nonce} is not 0x + 64 lower-case hex`);
  assert(/^0x[0-9a-f]{130}$/.test(sig), `signature ${sig} is not 65 bytes of lower-case hex`);
  const s = BigInt("0x" + sig.slice(66, 130));
  const v = parseInt(sig.slice(130, 132), 16);
  const HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;
  assert(s <= HALF_N, "signature s is not low-s");
  assert(v === 27 || v === 28, `signature v=${v} not in {27,28}`);
  return {
    domain: { ...domain },
    primaryType: "TransferWithAuthorization",
    typehash: TRANSFER_WITH_AUTHORIZATION_TYPEHASH,
    recoveredAddress: recovered,
    signatureBytes: (sig.length - 2) / 2,
    v,
  };
}

// Deltas against floor(signedAtUnixS); validAfter "0" (v2) is reported as such, not as a delta.
function timing(auth, signedAtUnixS) {
  const t = Math.floor(signedAtUnixS);
  return {
    signedAtUnixSFloor: t,
    validAfterIsZero: auth.validAfter === "0",
    validAfterMinusSignedAt: auth.validAfter === "0" ? null : Number(BigInt(auth.validAfter) - BigInt(t)),
    validBeforeMinusSignedAt: Number(BigInt(auth.validBefore) - BigInt(t)),
  };
}

function writeFixture(name, obj) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(obj, null, 2) + "\n");
  console.log(`wrote ${path.relative(REPO, file)}`);
}

const errMsg = (e) => (e instanceof Error ? e.message : String(e));
const headerNamesOf = (req) => req.rawHeaderNames.map((h) => h.toLowerCase());

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------
const PKGS = packageVersions();

async function runV2Scenario({ name, description, accepts, spendControls, expectedIndex, extraFields }) {
  const pr = v2PaymentRequired(accepts);
  const challenge = v2Challenge(pr);
  let settle = null;
  let ok = null;
  const { fetchWithPayment, httpClient, seen } = makeV2Client({ spendControls });
  lastSignedAtUnixS = null;
  const result = await withServer(
    (n, req) => {
      const ph = findPaymentHeader(req);
      if (!ph) return challenge;
      const payload = JSON.parse(unb64(ph.raw));
      settle = {
        success: true,
        transaction: fakeTx(name),
        network: payload.accepted.network,
        payer: payload.payload.authorization.from,
      };
      ok = paidOk("PAYMENT-RESPONSE", settle);
      return ok;
    },
    async (url, requests) => {
      const res = await fetchWithPayment(url, { method: "GET" });
      const body = await res.text();
      return { res, body, requests };
    },
  );
  const { res, requests } = result;
  assert(res.status === 200, `${name}: client ended with HTTP ${res.status}`);
  assert(requests.length === 2, `${name}: expected 2 requests, saw ${requests.length}`);
  const retry = requests[1];
  const ph = findPaymentHeader(retry);
  assert(ph, `${name}: no payment header on retry`);
  assert(B64_STANDARD.test(ph.raw), `${name}: payment header is not standard base64`);
  const payload = JSON.parse(unb64(ph.raw));
  assert(b64(unb64(ph.raw)) === ph.raw, `${name}: base64 does not round-trip`);
  const chosen = payload.accepted;
  if (expectedIndex !== undefined) {
    assert(JSON.stringify(chosen) === JSON.stringify(accepts[expectedIndex]),
      `${name}: client did not pick accepts[${expectedIndex}]`);
  }
  const chainId = Number(chosen.network.split(":")[1]);
  const eip712 = await verifyCapture({ payload, requirement: chosen, chainId, amountField: "amount" });
  assert(lastSignedAtUnixS !== null, `${name}: signing time not captured`);
  const receiptHeaderRaw = res.headers.get("PAYMENT-RESPONSE");
  const clientSawReceipt = {
    onPaymentResponseHook: seen.paymentResponseHookCtx.map((c) => c.settleResponse),
    httpClientGetPaymentSettleResponse: httpClient.getPaymentSettleResponse((h) => res.headers.get(h)),
    decodePaymentResponseHeader: receiptHeaderRaw ? decodePaymentResponseHeader(receiptHeaderRaw) : null,
    note:
      "wrapFetchWithPayment returns the plain Response; the receipt is exposed to x402Client.onPaymentResponse hooks " +
      "(ctx.settleResponse, decoded from PAYMENT-RESPONSE, else X-PAYMENT-RESPONSE) and can be decoded by the caller with " +
      "decodePaymentResponseHeader(res.headers.get('PAYMENT-RESPONSE')) or x402HTTPClient.getPaymentSettleResponse.",
  };
  const fixture = {
    scenario: name,
    description,
    client: "@x402/fetch wrapFetchWithPayment + x402Client + registerExactEvmScheme (@x402/evm/exact/client)",
    clientSpendControls: spendControls ?? "default (known default assets only, $1 cap)",
    ...(extraFields ?? {}),
    packages: PKGS,
    payer: PAYER,
    request: { method: "GET", path: RESOURCE_PATH },
    challenge: {
      status: 402,
      headerName: "payment-required",
      headerRaw: challenge.headerRaw,
      json: pr,
      bodyRaw: challenge.bodyRaw,
    },
    paymentHeaderName: ph.name,
    paymentHeaderRaw: ph.raw,
    paymentPayload: payload,
    retryRequestHeaderNames: headerNamesOf(retry),
    settleResponseHeaderName: "payment-response",
    settleResponseHeaderRaw: ok.raw,
    settleResponse: settle,
    clientSawReceipt,
    signedAtUnixS: lastSignedAtUnixS,
    timing: timing(payload.payload.authorization, lastSignedAtUnixS),
    eip712,
  };
  writeFixture(name, fixture);
  return fixture;
}

async function runV1Scenario({ name, description, chain, requirement }) {
  const pr = v1PaymentRequired([requirement]);
  const challenge = v1Challenge(pr);
  let settle = null;
  let ok = null;
  const { fetchWithPay } = makeV1Client(chain);
  lastSignedAtUnixS = null;
  const { res, requests } = await withServer(
    (n, req) => {
      const ph = findPaymentHeader(req);
      if (!ph) return challenge;
      const payload = JSON.parse(unb64(ph.raw));
      settle = {
        success: true,
        transaction: fakeTx(name),
        network: payload.network,
        payer: payload.payload.authorization.from,
      };
      ok = paidOk("X-PAYMENT-RESPONSE", settle);
      return ok;
    },
    async (url, requests) => {
      const res = await fetchWithPay(url, { method: "GET" });
      await res.text();
      return { res, requests };
    },
  );
  assert(res.status === 200, `${name}: client ended with HTTP ${res.status}`);
  assert(requests.length === 2, `${name}: expected 2 requests, saw ${requests.length}`);
  const retry = requests[1];
  const ph = findPaymentHeader(retry);
  assert(ph && ph.name === "x-payment", `${name}: no X-PAYMENT header on retry`);
  assert(B64_STANDARD.test(ph.raw), `${name}: payment header is not standard base64`);
  const payload = JSON.parse(unb64(ph.raw));
  const eip712 = await verifyCapture({
    payload,
    requirement,
    chainId: CHAIN_IDS[requirement.network],
    amountField: "maxAmountRequired",
  });
  const receiptRaw = res.headers.get("X-PAYMENT-RESPONSE");
  const fixture = {
    scenario: name,
    description,
    client: "x402-fetch wrapFetchWithPayment(fetch, walletClient) with a viem wallet client (local account, chain set)",
    packages: PKGS,
    payer: PAYER,
    request: { method: "GET", path: RESOURCE_PATH },
    challenge: { status: 402, json: pr, bodyRaw: challenge.bodyRaw },
    paymentHeaderName: ph.name,
    paymentHeaderRaw: ph.raw,
    paymentPayload: payload,
    retryRequestHeaderNames: headerNamesOf(retry),
    settleResponseHeaderName: "x-payment-response",
    settleResponseHeaderRaw: ok.raw,
    settleResponse: settle,
    clientSawReceipt: {
      decodeXPaymentResponse: receiptRaw ? decodeXPaymentResponse(receiptRaw) : null,
      note:
        "x402-fetch's wrapper returns the plain Response and never reads X-PAYMENT-RESPONSE itself; the package " +
        "exports decodeXPaymentResponse(header) for the caller.",
    },
    signedAtUnixS: lastSignedAtUnixS,
    timing: timing(payload.payload.authorization, lastSignedAtUnixS),
    eip712,
  };
  writeFixture(name, fixture);
  return fixture;
}

// Generic probe: run one client against a scripted server, report what happened.
async function probe(makeFetch, responses) {
  return withServer(
    (n, req) => {
      const r = responses[Math.min(n, responses.length - 1)];
      return typeof r === "function" ? r(req) : r;
    },
    async (url, requests) => {
      const out = { requests: 0 };
      try {
        const res = await makeFetch()(url, { method: "GET" });
        out.outcome = "returned";
        out.status = res.status;
        out.responseHeaders = Object.fromEntries(
          [...res.headers.entries()].filter(([k]) => /payment/i.test(k)),
        );
        out.body = await res.text();
      } catch (e) {
        out.outcome = "threw";
        out.error = errMsg(e);
      }
      out.requests = requests.length;
      out.paymentHeaderNamesSent = requests
        .map((r) => findPaymentHeader(r)?.name ?? null)
        .filter((x) => x !== null);
      out.paymentPayloadsSent = requests
        .map((r) => findPaymentHeader(r))
        .filter((x) => x)
        .map((x) => JSON.parse(unb64(x.raw)));
      // Every signature a probe captured must recover too.
      const first = responses[0];
      const servedV1Accepts = first.bodyRaw ? JSON.parse(first.bodyRaw).accepts ?? [] : [];
      for (const p of out.paymentPayloadsSent) {
        if (p.x402Version === 2) {
          await verifyCapture({ payload: p, requirement: p.accepted, chainId: Number(p.accepted.network.split(":")[1]), amountField: "amount" });
        } else {
          const req = servedV1Accepts.find((a) => a.network === p.network && a.maxAmountRequired !== undefined);
          assert(req, `no served v1 requirement for network ${p.network}`);
          await verifyCapture({ payload: p, requirement: req, chainId: CHAIN_IDS[p.network], amountField: "maxAmountRequired" });
        }
      }
      out.retryAccessControlExposeHeaders = requests.length > 1 ? requests[1].headers["access-control-expose-headers"] ?? null : null;
      out.retryRequestHeaderNames = requests.length > 1 ? headerNamesOf(requests[1]) : null;
      out.firstRequestHeaderNames = headerNamesOf(requests[0]);
      return out;
    },
  );
}

async function clientBehaviour() {
  const baseReq = v2Requirement("eip155:8453", BASE_USDC, { name: "USD Coin", version: "2" });
  const pr = v2PaymentRequired([baseReq]);
  const v1BaseReq = v1Requirement("base", BASE_USDC, { name: "USD Coin", version: "2" });
  const v1pr = v1PaymentRequired([v1BaseReq]);
  const settleV2 = { success: true, transaction: fakeTx("behaviour"), network: "eip155:8453", payer: PAYER };
  const settleV1 = { success: true, transaction: fakeTx("behaviour"), network: "base", payer: PAYER };
  const v2 = (opts) => () => makeV2Client(opts).fetchWithPayment;
  const v1 = (chain = base, maxValue) => () => makeV1Client(chain, maxValue).fetchWithPay;
  const r = {};

  // --- v2: which challenge sources it accepts
  r.v2_headerOnly_noBody = await probe(v2(), [v2Challenge(pr, { body: false }), paidOk("PAYMENT-RESPONSE", settleV2)]);
  r.v2_bodyOnly_v2Json_noHeader = await probe(v2(), [v2Challenge(pr, { header: false }), paidOk("PAYMENT-RESPONSE", settleV2)]);
  r.v2_bodyOnly_v1Json_noHeader = await probe(v2(), [v1Challenge(v1pr), paidOk("X-PAYMENT-RESPONSE", settleV1)]);
  r.v2_dual_v2Header_plus_v1Body = await probe(v2(), [v2Challenge(pr, { v1Body: v1pr }), paidOk("PAYMENT-RESPONSE", settleV2)]);

  // --- v2: selection among several accepts (default selector)
  const sepReq = v2Requirement("eip155:84532", BASE_SEPOLIA_USDC, { name: "USDC", version: "2" });
  r.v2_multi_accepts_8453_then_84532 = await probe(v2(), [v2Challenge(v2PaymentRequired([baseReq, sepReq])), paidOk("PAYMENT-RESPONSE", settleV2)]);
  r.v2_multi_accepts_unknownAsset_then_8453 = await probe(v2(), [
    v2Challenge(v2PaymentRequired([v2Requirement("eip155:31337", CUSTOM_TOKEN, { name: "USD Coin", version: "2" }), baseReq])),
    paidOk("PAYMENT-RESPONSE", settleV2),
  ]);

  // --- v2: which receipt header names it reads (seen through the onPaymentResponse hook)
  const receiptProbe = async (headerName) => {
    const c = makeV2Client();
    const out = await probe(() => c.fetchWithPayment, [v2Challenge(pr), paidOk(headerName, settleV2)]);
    out.onPaymentResponseHookSettle = c.seen.paymentResponseHookCtx.map((x) => x.settleResponse);
    return out;
  };
  r.v2_receipt_in_PAYMENT_RESPONSE = await receiptProbe("PAYMENT-RESPONSE");
  r.v2_receipt_in_X_PAYMENT_RESPONSE = await receiptProbe("X-PAYMENT-RESPONSE");
  r.v2_receipt_in_payment_response_lowercase = await receiptProbe("payment-response");

  // --- v2: negative cases (retry answered with 402 again)
  const negV2 = async (second) => {
    const c = makeV2Client();
    const out = await probe(() => c.fetchWithPayment, [v2Challenge(pr), second]);
    out.onPaymentResponseHookCtx = c.seen.paymentResponseHookCtx;
    return out;
  };
  const verifyFail = v2PaymentRequired([baseReq], "invalid_exact_evm_signature");
  r.v2_retry402_verifyFailure_PAYMENT_REQUIRED_with_error = await negV2(v2Challenge(verifyFail));
  const settleFail = { success: false, errorReason: "invalid_exact_evm_insufficient_balance", transaction: "", network: "eip155:8453", payer: PAYER };
  r.v2_retry402_settleFailure_PAYMENT_RESPONSE_success_false = await negV2({
    status: 402,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store", "PAYMENT-RESPONSE": b64(JSON.stringify(settleFail)) },
    body: "{}",
  });

  // --- v2: spend controls
  const custom31337 = v2Requirement("eip155:31337", CUSTOM_TOKEN, { name: "USD Coin", version: "2" });
  r.v2_customAsset_defaultSpendControls = await probe(v2(), [v2Challenge(v2PaymentRequired([custom31337])), paidOk("PAYMENT-RESPONSE", settleV2)]);
  r.v2_customAsset_allowedAssetsEntry = await probe(
    v2({ spendControls: { allowedAssets: [{ network: "eip155:31337", asset: CUSTOM_TOKEN }] } }),
    [v2Challenge(v2PaymentRequired([custom31337])), paidOk("PAYMENT-RESPONSE", settleV2)],
  );
  r.v2_customAsset_allowedAssetsTrue = await probe(
    v2({ spendControls: { allowedAssets: true } }),
    [v2Challenge(v2PaymentRequired([custom31337])), paidOk("PAYMENT-RESPONSE", settleV2)],
  );
  const over = { ...baseReq, amount: "1000001" };
  r.v2_baseUsdc_amount_1000001_defaultCap = await probe(v2(), [v2Challenge(v2PaymentRequired([over])), paidOk("PAYMENT-RESPONSE", settleV2)]);
  r.v2_baseUsdc_amount_1000000_defaultCap = await probe(v2(), [v2Challenge(v2PaymentRequired([{ ...baseReq, amount: "1000000" }])), paidOk("PAYMENT-RESPONSE", settleV2)]);

  // --- v1
  r.v1_retry402_with_error_body = await probe(v1(), [
    v1Challenge(v1pr),
    v1Challenge(v1PaymentRequired([v1BaseReq], "invalid_exact_evm_payload_signature")),
  ]);
  r.v1_dual_v2Header_plus_v1Body = await probe(v1(), [v2Challenge(pr, { v1Body: v1pr }), paidOk("X-PAYMENT-RESPONSE", settleV1)]);
  r.v1_v2BodyOnly = await probe(v1(), [v2Challenge(pr), paidOk("X-PAYMENT-RESPONSE", settleV1)]);
  r.v1_outputSchema_null = await probe(v1(), [
    v1Challenge(v1PaymentRequired([{ ...v1BaseReq, outputSchema: null }])),
    paidOk("X-PAYMENT-RESPONSE", settleV1),
  ]);
  r.v1_amount_100001_defaultMaxValue = await probe(v1(), [
    v1Challenge(v1PaymentRequired([{ ...v1BaseReq, maxAmountRequired: "100001" }])),
    paidOk("X-PAYMENT-RESPONSE", settleV1),
  ]);
  r.v1_walletOnBase_challengeOnlyBaseSepolia = await probe(v1(base), [
    v1Challenge(v1PaymentRequired([v1Requirement("base-sepolia", BASE_SEPOLIA_USDC, { name: "USDC", version: "2" })])),
    paidOk("X-PAYMENT-RESPONSE", settleV1),
  ]);
  r.v1_eip155_8453_network_name = await probe(v1(), [
    v1Challenge(v1PaymentRequired([{ ...v1BaseReq, network: "eip155:8453" }])),
    paidOk("X-PAYMENT-RESPONSE", settleV1),
  ]);

  // Sanity: these expectations are what the notes below state; fail loudly if a client changes.
  const expect = (cond, msg) => assert(cond, `client-behaviour: ${msg}`);
  expect(r.v2_headerOnly_noBody.status === 200, "v2 header-only challenge should pay");
  expect(r.v2_bodyOnly_v2Json_noHeader.outcome === "threw", "v2 body-only v2 JSON should throw");
  expect(r.v2_dual_v2Header_plus_v1Body.paymentHeaderNamesSent[0] === "payment-signature", "dual → PAYMENT-SIGNATURE");
  expect(r.v2_customAsset_defaultSpendControls.outcome === "threw", "custom asset refused by default");
  expect(r.v2_customAsset_allowedAssetsEntry.status === 200, "custom asset allowed via allowedAssets entry");

  const s = (x) =>
    x.outcome === "threw" ? `throws "${x.error.replace(/\s+/g, " ").slice(0, 200)}"` : `returns HTTP ${x.status}`;
  const notes = [
    `v2 retry answered with 402 + PAYMENT-REQUIRED(error): wrapFetchWithPayment ${s(r.v2_retry402_verifyFailure_PAYMENT_REQUIRED_with_error)} after ${r.v2_retry402_verifyFailure_PAYMENT_REQUIRED_with_error.requests} requests (no further retry); onPaymentResponse hooks get ctx.paymentRequired (decoded, with error) and no settleResponse.`,
    `v2 retry answered with 402 + PAYMENT-RESPONSE(success:false): ${s(r.v2_retry402_settleFailure_PAYMENT_RESPONSE_success_false)} after ${r.v2_retry402_settleFailure_PAYMENT_RESPONSE_success_false.requests} requests; hooks get ctx.settleResponse with success:false.`,
    `v1 retry answered with 402 + error body: x402-fetch ${s(r.v1_retry402_with_error_body)} after ${r.v1_retry402_with_error_body.requests} requests (the retry bypasses the wrapper, so no loop and no throw).`,
    `v2 challenge sources: PAYMENT-REQUIRED header only → ${s(r.v2_headerOnly_noBody)}; v2 JSON body without header → ${s(r.v2_bodyOnly_v2Json_noHeader)}; v1 JSON body without header → ${s(r.v2_bodyOnly_v1Json_noHeader)} sending ${JSON.stringify(r.v2_bodyOnly_v1Json_noHeader.paymentHeaderNamesSent)} (registerExactEvmScheme also registers the v1 scheme for the v1 network names); v2 header + v1 body → header wins, sends ${JSON.stringify(r.v2_dual_v2Header_plus_v1Body.paymentHeaderNamesSent)}.`,
    `v2 selection: default selector = first acceptable entry in server order: [84532, 8453] → eip155:84532 (v2-multi-accepts.json); [8453, 84532] → ${r.v2_multi_accepts_8453_then_84532.paymentPayloadsSent[0]?.accepted?.network}; [unknown-asset on 31337, 8453] → ${r.v2_multi_accepts_unknownAsset_then_8453.paymentPayloadsSent[0]?.accepted?.network} (spend controls drop the unknown asset first).`,
    `v2 receipt header names read (x402HTTPClient.getPaymentSettleResponse): "PAYMENT-RESPONSE" first, then "X-PAYMENT-RESPONSE" (case-insensitive via Headers.get).`,
    `v2 spend controls: unknown asset with default controls → ${s(r.v2_customAsset_defaultSpendControls)}; client.setSpendControls({allowedAssets:[{network:"eip155:31337", asset}]}) → ${s(r.v2_customAsset_allowedAssetsEntry)}; allowedAssets:true → ${s(r.v2_customAsset_allowedAssetsTrue)}. Base USDC amount "1000001" with the default $1 cap → ${s(r.v2_baseUsdc_amount_1000001_defaultCap)}; "1000000" → ${s(r.v2_baseUsdc_amount_1000000_defaultCap)}.`,
    `v1 (x402-fetch) limits: default maxValue 100000 (0.1 USDC) on maxAmountRequired; "100001" → ${s(r.v1_amount_100001_defaultMaxValue)}. outputSchema:null → ${s(r.v1_outputSchema_null)}. network "eip155:8453" → ${s(r.v1_eip155_8453_network_name)}.`,
    `v1 with a v2-only challenge (header + v2 body) → ${s(r.v1_v2BodyOnly)}; v1 with v2 header + v1 body → ${s(r.v1_dual_v2Header_plus_v1Body)} sending ${JSON.stringify(r.v1_dual_v2Header_plus_v1Body.paymentHeaderNamesSent)}.`,
    `v1 wallet on chain base, challenge offering only base-sepolia → ${s(r.v1_walletOnBase_challengeOnlyBaseSepolia)} (selectPaymentRequirements falls back to accepts[0] when nothing matches the wallet chain; it signs with the requirement's chain id).`,
    `Both clients add request header "access-control-expose-headers" to the paid retry (v2: ${JSON.stringify(r.v2_receipt_in_PAYMENT_RESPONSE.retryAccessControlExposeHeaders)}, v1: ${JSON.stringify(r.v1_dual_v2Header_plus_v1Body.retryAccessControlExposeHeaders)}); the other retry headers are undici defaults, so a browser preflight would list it with the payment header.`,
  ];

  const v2Retry = r.v2_receipt_in_PAYMENT_RESPONSE.retryRequestHeaderNames;
  const v1Retry = r.v1_dual_v2Header_plus_v1Body.retryRequestHeaderNames;
  writeFixture("client-behaviour", {
    packages: PKGS,
    notes,
    v2: {
      receiptHeaderNamesRead: ["PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"],
      acceptsPaymentRequiredHeaderOnly: r.v2_headerOnly_noBody.status === 200,
      acceptsV2JsonBodyOnly: r.v2_bodyOnly_v2Json_noHeader.status === 200,
      acceptsV1JsonBodyOnly: r.v2_bodyOnly_v1Json_noHeader.status === 200,
      firstRequestHeaderNames: r.v2_receipt_in_PAYMENT_RESPONSE.firstRequestHeaderNames,
      retryRequestHeaderNames: v2Retry,
    },
    v1: {
      receiptHeaderNamesRead: [],
      firstRequestHeaderNames: r.v1_dual_v2Header_plus_v1Body.firstRequestHeaderNames,
      retryRequestHeaderNames: v1Retry,
    },
    probes: r,
  });
  return r;
}

async function main() {
  // The key must be anvil's well-known account #1.
  const derived = mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: 1 });
  assert(derived.address === PAYER, "anvil mnemonic index 1 is not the expected payer");
  assert("0x" + Buffer.from(derived.getHdKey().privateKey).toString("hex") === PAYER_KEY, "PAYER_KEY is not anvil #1");
  assert(privateKeyToAccount(PAYER_KEY).address === PAYER, "PAYER_KEY does not give PAYER");
  assert(
    keccak256(toHex("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")) ===
      TRANSFER_WITH_AUTHORIZATION_TYPEHASH,
    "typehash mismatch",
  );

  const baseUsdc = v2Requirement("eip155:8453", BASE_USDC, { name: "USD Coin", version: "2" });
  const sepUsdc = v2Requirement("eip155:84532", BASE_SEPOLIA_USDC, { name: "USDC", version: "2" });
  const custom = v2Requirement("eip155:31337", CUSTOM_TOKEN, { name: "USD Coin", version: "2" });

  await runV2Scenario({
    name: "v2-base",
    description: "v2 client, Base mainnet USDC (eip155:8453), default spend controls",
    accepts: [baseUsdc],
    expectedIndex: 0,
  });
  await runV2Scenario({
    name: "v2-base-sepolia",
    description: "v2 client, Base Sepolia USDC (eip155:84532, domain name \"USDC\"), default spend controls",
    accepts: [sepUsdc],
    expectedIndex: 0,
  });
  // The same challenge against a client with default spend controls: record the refusal.
  const refused = await probe(() => makeV2Client().fetchWithPayment, [
    v2Challenge(v2PaymentRequired([custom])),
    { status: 500, headers: {}, body: "unexpected retry" },
  ]);
  assert(refused.outcome === "threw" && refused.requests === 1, "custom asset unexpectedly accepted by default spend controls");
  await runV2Scenario({
    name: "v2-custom-asset-31337",
    extraFields: {
      withDefaultSpendControls: { outcome: refused.outcome, requests: refused.requests, error: refused.error },
      howToAllow:
        "client.setSpendControls({ allowedAssets: [{ network: 'eip155:31337', asset: '0x5FbDB2315678afecb367f032d93F642f64180aa3' }] }) " +
        "(optional per-entry atomic cap maxAmountPerPayment: '<integer>'); or allowedAssets: true; or setSpendControls(false); " +
        "x402Client.fromConfig / wrapFetchWithPaymentFromConfig take the same object as config.spendControls.",
    },
    description:
      "v2 client, custom token on eip155:31337. Refused with default spend controls (see client-behaviour.json); " +
      "captured with client.setSpendControls({allowedAssets:[{network:'eip155:31337', asset}]})",
    accepts: [custom],
    expectedIndex: 0,
    spendControls: { allowedAssets: [{ network: "eip155:31337", asset: CUSTOM_TOKEN }] },
  });
  await runV2Scenario({
    name: "v2-multi-accepts",
    description: "v2 client offered [eip155:84532, eip155:8453]; default selector takes the first acceptable entry",
    accepts: [sepUsdc, baseUsdc],
    expectedIndex: 0,
  });
  await runV1Scenario({
    name: "v1-base",
    description: "v1 client (x402-fetch), network base, Base USDC, with an outputSchema object",
    chain: base,
    requirement: v1Requirement("base", BASE_USDC, { name: "USD Coin", version: "2" }, {
      outputSchema: { input: { type: "http", method: "GET" }, output: { type: "object" } },
    }),
  });
  await runV1Scenario({
    name: "v1-base-sepolia",
    description: "v1 client (x402-fetch), network base-sepolia, Base Sepolia USDC, no outputSchema",
    chain: baseSepolia,
    requirement: v1Requirement("base-sepolia", BASE_SEPOLIA_USDC, { name: "USDC", version: "2" }),
  });
  await clientBehaviour();
  console.log("all signatures recovered to", PAYER);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
