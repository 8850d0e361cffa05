#!/usr/bin/env node
// A `solc` command line good enough for forge (foundry-compilers), backed by the pinned npm
// `solc` package (wasm), so forge never needs a native compiler or the network.
//
// forge 1.7.1 runs exactly two kinds of command:
//   solc --version
//   solc [--allow-paths A,B] [--base-path P] [--include-path I]... --standard-json   (input on stdin)
// The standard-JSON input normally carries every source's content; files it does not carry are
// read from disk, relative to the base path and include paths, and only inside the base path,
// include paths and allowed paths (as the native compiler does).
"use strict";

const fs = require("node:fs");
const path = require("node:path");

function loadSolc() {
  const root = path.resolve(__dirname, "..");
  try {
    return require(require.resolve("solc", { paths: [root] }));
  } catch (e) {
    process.stderr.write(`solc-wrapper: cannot load the npm 'solc' package (run 'npm ci' in ${root}): ${e.message}\n`);
    process.exit(1);
  }
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, basePath: null, includePaths: [], allowPaths: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, null];
    const value = () => {
      if (inline !== null) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case "--version":
        opts.version = true;
        break;
      case "--standard-json":
        opts.standardJson = true;
        break;
      case "--base-path":
        opts.basePath = value();
        break;
      case "--include-path":
        opts.includePaths.push(value());
        break;
      case "--allow-paths":
        opts.allowPaths.push(...value().split(",").filter(Boolean));
        break;
      default:
        usage(`unsupported argument ${JSON.stringify(a)}`);
    }
  }
  return opts;
}

function usage(msg) {
  process.stderr.write(
    `solc-wrapper: ${msg}\nsupported: --version | [--base-path P] [--include-path P]... [--allow-paths A,B] --standard-json < input.json\n`,
  );
  process.exit(2);
}

function makeImportCallback(opts) {
  const cwd = process.cwd();
  const base = path.resolve(cwd, opts.basePath ?? ".");
  const roots = [base, ...opts.includePaths.map((p) => path.resolve(cwd, p))];
  const allowed = [...roots, ...opts.allowPaths.map((p) => path.resolve(cwd, p))];
  const isAllowed = (file) => allowed.some((dir) => file === dir || file.startsWith(dir + path.sep));
  return (unitName) => {
    const candidates = path.isAbsolute(unitName) ? [unitName] : roots.map((r) => path.resolve(r, unitName));
    for (const file of candidates) {
      if (!isAllowed(file)) continue;
      try {
        return { contents: fs.readFileSync(file, "utf8") };
      } catch (_) {
        // try the next root
      }
    }
    return { error: `File not found inside the base path or any include path: ${unitName}` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  if (opts.version) {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (!opts.standardJson) usage("nothing to do");
  const input = fs.readFileSync(0, "utf8");
  // Like native solc: errors (including invalid input) are reported inside the JSON, exit 0.
  const output = solc.compile(input, { import: makeImportCallback(opts) });
  process.stdout.write(output);
}

main();
