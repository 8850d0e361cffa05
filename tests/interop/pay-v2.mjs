#!/usr/bin/env node
// Pays one gateway route with the official x402 v2 client (@x402/fetch + @x402/evm 2.27.0).
//
//   node tests/interop/pay-v2.mjs <gateway-base-url> <payer-private-key> <route-path>
//
// Prints one JSON line: {client, status, body, headers, receiptHeaderName, receipt,
// clientPaymentStatus, paymentResponseHooks, requests}. `receipt` is the PAYMENT-RESPONSE header
// decoded by the library's own decodePaymentResponseHeader; `requests` lists what the client
// sent (the paid retry carries its PAYMENT-SIGNATURE header, raw and decoded). Exits 1 with the
// message on stderr when the client throws.
//
// The client is built as @x402/fetch documents it: an x402Client with the exact EVM scheme
// registered for a local viem account, default spend controls (Base USDC on eip155:8453 is a
// known asset, capped at $1 per payment), wrapped around fetch.

import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, x402HTTPClient, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";

import { parseArgs, recordingFetch, headersObject, jsonOrNull, run } from "./lib.mjs";

run(async () => {
  const { url, key } = parseArgs("pay-v2.mjs <gateway-base-url> <payer-private-key> <route-path>");

  const account = privateKeyToAccount(key);
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  // What the client itself makes of the paid response (its hooks get the decoded receipt).
  const paymentResponseHooks = [];
  client.onPaymentResponse(async (ctx) => {
    paymentResponseHooks.push({ settleResponse: ctx.settleResponse ?? null, paymentRequired: ctx.paymentRequired ?? null });
  });

  const recorder = recordingFetch();
  const fetchWithPayment = wrapFetchWithPayment(recorder.fetch, client);
  const res = await fetchWithPayment(url, { method: "GET" });
  const body = await res.text();

  const receiptRaw = res.headers.get("PAYMENT-RESPONSE");
  const receipt = receiptRaw === null ? null : decodePaymentResponseHeader(receiptRaw);
  const { paymentStatus } = new x402HTTPClient(client).parsePaymentResult({
    status: res.status,
    getHeader: (name) => res.headers.get(name),
    body: jsonOrNull(body) ?? body,
  });

  return {
    client: "@x402/fetch@2.27.0",
    payer: account.address,
    status: res.status,
    body,
    headers: headersObject(res.headers),
    receiptHeaderName: receiptRaw === null ? null : "PAYMENT-RESPONSE",
    receipt,
    clientPaymentStatus: paymentStatus,
    paymentResponseHooks,
    requests: recorder.requests,
  };
});
