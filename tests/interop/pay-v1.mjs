#!/usr/bin/env node
// Pays one gateway route with the official x402 v1 client (x402-fetch 1.2.0).
//
//   node tests/interop/pay-v1.mjs <gateway-base-url> <payer-private-key> <route-path> [max-value-atomic]
//
// Prints one JSON line: {client, status, body, headers, receiptHeaderName, receipt,
// receiptSchema, rpcCalls, requests}. `receipt` is the X-PAYMENT-RESPONSE header decoded by the
// library's own decodeXPaymentResponse; `receiptSchema` says whether it passes the v1 package's
// SettleResponseSchema (x402/types, the package x402-fetch is built on). `requests` lists what
// the client sent (the paid retry carries its X-PAYMENT header, raw and decoded). Exits 1 with
// the message on stderr when the client throws.
//
// The client is built as x402-fetch documents it: a viem wallet client for chain `base` (8453;
// x402-fetch picks the requirement whose network matches the wallet's chain) wrapped around
// fetch with a maxValue (default 0.1 USDC). Signing is local: the wallet's transport throws
// on any RPC call, and `rpcCalls` records any that were attempted.

import { createWalletClient, custom } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { base } from "viem/chains";
import { wrapFetchWithPayment, decodeXPaymentResponse } from "x402-fetch";
import { SettleResponseSchema } from "x402/types";

import { parseArgs, recordingFetch, headersObject, run } from "./lib.mjs";

run(async () => {
  const { url, key, extra } = parseArgs("pay-v1.mjs <gateway-base-url> <payer-private-key> <route-path> [max-value-atomic]");
  const maxValue = extra[0] === undefined ? BigInt(0.1 * 10 ** 6) : BigInt(extra[0]);

  const rpcCalls = [];
  const offline = custom({
    async request({ method }) {
      rpcCalls.push(method);
      throw new Error(`unexpected RPC call ${method}: the v1 client must sign offline`);
    },
  });
  const account = privateKeyToAccount(key);
  const walletClient = createWalletClient({ account, chain: base, transport: offline });

  const recorder = recordingFetch();
  const fetchWithPay = wrapFetchWithPayment(recorder.fetch, walletClient, maxValue);
  const res = await fetchWithPay(url, { method: "GET" });
  const body = await res.text();

  const receiptRaw = res.headers.get("X-PAYMENT-RESPONSE");
  const receipt = receiptRaw === null ? null : decodeXPaymentResponse(receiptRaw);
  let receiptSchema = null;
  if (receipt !== null) {
    const parsed = SettleResponseSchema.safeParse(receipt);
    receiptSchema = parsed.success
      ? { valid: true }
      : { valid: false, issues: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`) };
  }

  return {
    client: "x402-fetch@1.2.0",
    payer: account.address,
    status: res.status,
    body,
    headers: headersObject(res.headers),
    receiptHeaderName: receiptRaw === null ? null : "X-PAYMENT-RESPONSE",
    receipt,
    receiptSchema,
    rpcCalls,
    requests: recorder.requests,
  };
});
