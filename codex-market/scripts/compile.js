#!/usr/bin/env node
// Compiles codex-market/contracts with the pinned solc (npm `solc`, see the root
// package.json) through its standard-JSON API and writes one artifact per
// deployable contract: { contractName, sourceName, compiler, abi, bytecode,
// deployedBytecode }. Offline: imports come from node_modules.
//
//   node codex-market/scripts/compile.js [--out DIR]     (default: codex-market/artifacts)
//
// The artifacts are committed; `cargo test -p codex-market` recompiles into a
// temporary directory and fails when they differ.
'use strict';

const fs = require('fs');
const path = require('path');

const marketDir = path.resolve(__dirname, '..');
const rootDir = path.resolve(marketDir, '..');
const solc = require(path.join(rootDir, 'node_modules', 'solc'));

const EXPECTED_SOLC = '0.8.28';
// Contracts that get an artifact (abstract contracts and interfaces do not).
const DEPLOYABLE = [
  'Marketplace',
  'TestToken',
  'Halo2Verifier',
  'TestVerifier',
  'EchoProofCheck',
  'RefusingToken',
];

function parseArgs(argv) {
  let out = path.join(marketDir, 'artifacts');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) {
      out = path.resolve(argv[++i]);
    } else {
      throw new Error(`unknown argument: ${argv[i]}`);
    }
  }
  return { out };
}

function listSources(dir, prefix) {
  const found = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = path.join(dir, entry.name);
    const unit = `${prefix}/${entry.name}`;
    if (entry.isDirectory()) {
      found.push(...listSources(full, unit));
    } else if (entry.name.endsWith('.sol')) {
      found.push({ unit, full });
    }
  }
  return found;
}

function findImports(unit) {
  const candidates = [path.join(marketDir, unit), path.join(rootDir, 'node_modules', unit)];
  for (const file of candidates) {
    if (fs.existsSync(file)) {
      return { contents: fs.readFileSync(file, 'utf8') };
    }
  }
  return { error: `not found: ${unit}` };
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const version = solc.version();
  if (!version.startsWith(EXPECTED_SOLC + '+')) {
    throw new Error(`solc ${EXPECTED_SOLC} expected, found ${version}: run scripts/setup.sh`);
  }
  const sources = {};
  for (const { unit, full } of listSources(path.join(marketDir, 'contracts'), 'contracts')) {
    sources[unit] = { content: fs.readFileSync(full, 'utf8') };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: 'cancun',
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    process.stderr.write(e.formattedMessage + '\n');
  }
  if (errors.length > 0) {
    process.exit(1);
  }
  fs.mkdirSync(out, { recursive: true });
  const written = [];
  for (const [sourceName, contracts] of Object.entries(output.contracts)) {
    for (const [contractName, c] of Object.entries(contracts)) {
      if (!DEPLOYABLE.includes(contractName)) {
        continue;
      }
      const artifact = {
        contractName,
        sourceName,
        compiler: `solc ${version}, optimizer 200 runs, evm cancun`,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
      };
      fs.writeFileSync(path.join(out, `${contractName}.json`), JSON.stringify(artifact, null, 2) + '\n');
      written.push(`${contractName} (${c.evm.deployedBytecode.object.length / 2} bytes)`);
    }
  }
  const missing = DEPLOYABLE.filter((name) => !written.some((w) => w.startsWith(name + ' ')));
  if (missing.length > 0) {
    throw new Error(`contracts not found: ${missing.join(', ')}`);
  }
  process.stdout.write(`wrote ${written.join(', ')} to ${out}\n`);
}

main();
