// Reads a JSON array of hex frames on stdin; prints a JSON array of what automerge-repo's own CBOR
// helper decodes them to (byte strings as {"$bytes": hex}). Used to check our encoder from the JS side.
import { cbor } from "@automerge/automerge-repo"

let input = ""
for await (const chunk of process.stdin) input += chunk
const plain = value => {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("hex") }
  if (Array.isArray(value)) return value.map(plain)
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}
const frames = JSON.parse(input).map(hex => plain(cbor.decode(Buffer.from(hex, "hex"))))
process.stdout.write(JSON.stringify(frames) + "\n")
