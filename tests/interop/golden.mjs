// Prints frames exactly as automerge-repo's own CBOR helper (cbor-x, tagUint8Array: false) encodes them,
// as JSON {name: hex}. Regenerate tests/sync/golden_frames.json with:
//   node tests/interop/golden.mjs > tests/sync/golden_frames.json
import { cbor } from "@automerge/automerge-repo"

const doc = "4NMNnkMhL8jXrdJ9jamS58PAVdXu"
const data = new Uint8Array([0x42, 0x01, 0x02, 0x03])
const frames = {
  join: { type: "join", senderId: "client-1", peerMetadata: { storageId: undefined, isEphemeral: false }, supportedProtocolVersions: ["1"] },
  join_empty_metadata: { type: "join", senderId: "client-1", peerMetadata: {}, supportedProtocolVersions: ["1"] },
  peer: { type: "peer", senderId: "server-1", peerMetadata: { storageId: "store-1", isEphemeral: false }, selectedProtocolVersion: "1", targetId: "client-1" },
  error: { type: "error", senderId: "server-1", message: "unsupported protocol version", targetId: "client-1" },
  request: { type: "request", senderId: "client-1", targetId: "server-1", documentId: doc, data },
  sync: { type: "sync", senderId: "client-1", targetId: "server-1", documentId: doc, data },
  doc_unavailable: { type: "doc-unavailable", senderId: "server-1", targetId: "client-1", documentId: doc },
  ephemeral: { type: "ephemeral", senderId: "client-1", targetId: "server-1", documentId: doc, data, count: 7, sessionId: "sess-1" },
  remote_subscription_change: { type: "remote-subscription-change", senderId: "client-1", targetId: "server-1", add: ["store-1"], remove: undefined },
  remote_heads_changed: { type: "remote-heads-changed", senderId: "server-1", targetId: "client-1", documentId: doc, newHeads: { "store-1": { heads: ["2RBQyijXyHYwyfYFiS42aN7DW1fsTBrRykEtkm7MCMeC3jPEFy"], timestamp: 1795777216511 } } },
}
const out = {}
for (const [name, message] of Object.entries(frames)) out[name] = Buffer.from(cbor.encode(message)).toString("hex")
process.stdout.write(JSON.stringify(out, null, 2) + "\n")
