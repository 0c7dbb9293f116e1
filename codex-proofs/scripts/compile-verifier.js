#!/usr/bin/env node
// Compiles the Solidity verifier that snark-verifier generates (read from stdin) with the
// project's pinned solc 0.8.19 (npm alias `solc-0.8.19`, installed by scripts/setup.sh),
// without the optimizer (with it, solc fails with "stack too deep"). Prints the creation
// bytecode as hex on stdout; compiler errors go to stderr with a non-zero exit.
"use strict";
const path = require("path");
const root = path.resolve(__dirname, "..", "..");
let solc;
try {
  solc = require(require.resolve("solc-0.8.19", { paths: [root] }));
} catch (e) {
  console.error("solc-0.8.19 is not installed: run scripts/setup.sh (npm ci)");
  process.exit(2);
}
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const source = Buffer.concat(chunks).toString("utf8");
  const input = {
    language: "Solidity",
    sources: { "Verifier.sol": { content: source } },
    settings: {
      optimizer: { enabled: false },
      outputSelection: { "*": { "*": ["evm.bytecode.object"] } },
    },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length > 0) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    process.exit(1);
  }
  const contracts = out.contracts["Verifier.sol"];
  const names = Object.keys(contracts);
  if (names.length !== 1) {
    console.error(`expected one contract, found ${names.length}`);
    process.exit(1);
  }
  process.stdout.write(contracts[names[0]].evm.bytecode.object);
});
