// Verifies and authorizes a chit with biscuit-wasm, using only what chit publishes: a root public key
// from discovery and the vocabulary of DESIGN §4. Reads {token, public_key, service, operations} as
// JSON on stdin; prints {"allowed": true} or {"allowed": false, "error": "..."} as its last line.
import { readFileSync } from "node:fs";
import { AuthorizerBuilder, Biscuit, PublicKey, SignatureAlgorithm } from "@biscuit-auth/biscuit-wasm";

const request = JSON.parse(readFileSync(0, "utf8"));
const [algorithm, hex] = request.public_key.split("/");
if (algorithm !== "ed25519") throw new Error(`unexpected root key algorithm ${algorithm}`);
function authorize() {
  const token = Biscuit.fromBase64(request.token, PublicKey.fromString(hex, SignatureAlgorithm.Ed25519));
  const builder = new AuthorizerBuilder();
  // a date literal: biscuit-wasm 0.6 cannot take a JS Date as a datalog parameter
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  builder.addCodeWithParameters(`service({service}); time(${now});`, { service: request.service }, {});
  for (const operation of request.operations) {
    builder.addCodeWithParameters("operation({op}); check if right({op});", { op: operation }, {});
  }
  builder.addCode('allow if service($s), right($r), $r.starts_with($s + ":");');
  // the default 1 ms budget is too short for a cold WebAssembly start
  builder.buildAuthenticated(token).authorizeWithLimits({ max_facts: 1000, max_iterations: 100, max_time_micro: 100000 });
}

// buildAuthenticated runs the token's rules within biscuit's default 1 ms, which biscuit-wasm 0.6 offers
// no way to raise: on a loaded machine a cold first run can exceed it, so a timeout is retried warm
let outcome = { allowed: true };
for (let attempt = 1; attempt <= 3; attempt++) {
  try {
    authorize();
    outcome = { allowed: true };
    break;
  } catch (error) {
    const message = String(error?.message ?? JSON.stringify(error));
    outcome = { allowed: false, error: message };
    if (!message.includes("Timeout")) break;
  }
}
console.log(JSON.stringify(outcome));
