// Demo profile (docker-compose.yml): places the committed EIP-3009 test token at Base's USDC
// address on the local anvil (chain id 8453), as crates/test-support does. The token has no
// constructor state, so its runtime code is all it needs.
import { readFileSync } from "node:fs";

const [rpc, artifactPath] = process.argv.slice(2);
const USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const artifact = JSON.parse(readFileSync(artifactPath, "utf8"));
const code = artifact.deployedBytecode.startsWith("0x") ? artifact.deployedBytecode : `0x${artifact.deployedBytecode}`;
// anvil may still be starting (npx installs it first): retry for up to two minutes.
let body;
for (let attempt = 0; ; attempt++) {
  try {
    const res = await fetch(rpc, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "anvil_setCode", params: [USDC, code] }),
      signal: AbortSignal.timeout(10_000),
    });
    body = await res.json();
    break;
  } catch (e) {
    if (attempt >= 60) {
      console.error("anvil did not answer:", e.message);
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 2_000));
  }
}
if (body.error) {
  console.error("anvil_setCode failed:", body.error.message);
  process.exit(1);
}
console.log(`token placed at ${USDC}`);
