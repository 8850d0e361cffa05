#!/usr/bin/env node
// Compiles contracts/src/*.sol offline with the pinned npm `solc` (wasm) package and writes one
// deterministic JSON artifact per deployable contract to contracts/artifacts/<Name>.json:
//   { contractName, abi, bytecode, deployedBytecode, compiler, sourceHash }
// `bytecode` is the 0x-hex creation code, `deployedBytecode` the 0x-hex runtime code (immutables
// appear as zero placeholders there), `sourceHash` the sha256 (hex) of the contract's source
// file. No metadata hash/CBOR is appended, so the bytecode depends on the source and settings
// only.
//
// Usage: node scripts/build-contracts.mjs [--out DIR]   (default DIR: contracts/artifacts)
// Exit status is non-zero on any compiler error or if a required selector is missing.

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CONTRACTS = join(ROOT, "contracts");
const SRC = join(CONTRACTS, "src");

// Compiler settings. Keep in step with contracts/foundry.toml so forge builds the same code.
const SETTINGS = Object.freeze({
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none", appendCBOR: false },
});

// Selectors the Rust side relies on (x402 notes §4); the build fails if one goes missing.
const REQUIRED_SELECTORS = {
  Eip3009Token: {
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)": "e3ee160e",
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)": "cf092995",
    "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)": "5a049a70",
    "authorizationState(address,bytes32)": "e94a0102",
  },
  SmartWallet1271: {
    "isValidSignature(bytes32,bytes)": "1626ba7e",
  },
  Aggregate3: {
    "aggregate3((address,bool,bytes)[])": "82ad56cb",
  },
};

function fail(msg) {
  process.stderr.write(`build-contracts: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  let out = join(CONTRACTS, "artifacts");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) {
      out = resolve(argv[++i]);
    } else {
      fail(`unknown argument ${JSON.stringify(argv[i])}; usage: build-contracts.mjs [--out DIR]`);
    }
  }
  return { out };
}

function loadSolc() {
  const require = createRequire(join(ROOT, "package.json"));
  try {
    return require("solc");
  } catch (e) {
    fail(`cannot load the npm 'solc' package (run 'npm ci' at the repo root): ${e.message}`);
  }
}

// Source unit names are paths relative to contracts/ ("src/X.sol"), as forge names them.
function readSources() {
  const files = readdirSync(SRC).filter((f) => f.endsWith(".sol")).sort();
  if (files.length === 0) fail(`no .sol files in ${SRC}`);
  const sources = {};
  for (const f of files) {
    sources[`src/${f}`] = { content: readFileSync(join(SRC, f), "utf8") };
  }
  return sources;
}

// Resolves imports not given in `sources` from inside contracts/ only.
function importCallback(path) {
  const full = resolve(CONTRACTS, path);
  if (!full.startsWith(CONTRACTS + sep)) return { error: `import outside contracts/: ${path}` };
  try {
    return { contents: readFileSync(full, "utf8") };
  } catch (e) {
    return { error: `cannot read ${path}: ${e.message}` };
  }
}

function sha256Hex(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  const sources = readSources();
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"] },
      },
    },
  };

  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: importCallback }));
  const diagnostics = output.errors ?? [];
  for (const d of diagnostics) {
    process.stderr.write(`${d.formattedMessage ?? d.message}\n`);
  }
  const errors = diagnostics.filter((d) => d.severity === "error");
  if (errors.length > 0) fail(`${errors.length} compiler error(s)`);

  const compiler = solc.version();
  const artifacts = new Map();
  for (const unit of Object.keys(output.contracts ?? {}).sort()) {
    if (!(unit in sources)) continue; // imported from elsewhere: not ours to publish
    for (const name of Object.keys(output.contracts[unit]).sort()) {
      const c = output.contracts[unit][name];
      if (!c.evm.bytecode.object) continue; // interface or abstract contract
      if (artifacts.has(name)) fail(`contract name ${name} is defined twice`);
      artifacts.set(name, {
        contractName: name,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        compiler,
        sourceHash: sha256Hex(sources[unit].content),
        methodIdentifiers: c.evm.methodIdentifiers,
      });
    }
  }

  for (const [name, wanted] of Object.entries(REQUIRED_SELECTORS)) {
    const a = artifacts.get(name);
    if (!a) fail(`expected contract ${name} was not produced`);
    for (const [sig, sel] of Object.entries(wanted)) {
      if (a.methodIdentifiers[sig] !== sel) {
        fail(`${name}: ${sig} should have selector 0x${sel}, got ${a.methodIdentifiers[sig] ?? "none"}`);
      }
    }
  }

  mkdirSync(out, { recursive: true });
  // Remove artifacts of contracts that no longer exist, so the directory mirrors the sources.
  for (const f of readdirSync(out)) {
    if (f.endsWith(".json") && !artifacts.has(f.slice(0, -".json".length))) rmSync(join(out, f));
  }
  for (const [name, a] of artifacts) {
    const { methodIdentifiers: _unused, ...artifact } = a;
    writeFileSync(join(out, `${name}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
    const runtimeBytes = (artifact.deployedBytecode.length - 2) / 2;
    process.stdout.write(`${relative(ROOT, join(out, `${name}.json`))}: ${runtimeBytes} runtime bytes\n`);
  }
  process.stdout.write(`built ${artifacts.size} contract(s) with solc ${compiler}\n`);
}

main();
