// A stock automerge-repo client (the "app"), driven by the interop tests.
//
//   node client.mjs --url ws://127.0.0.1:PORT/v1/sync --token T --doc automerge:ID \
//        [--set key=JSON ...] [--edit field=JSON ... --device D --role R] [--wait-for key=JSON ...]
//        [--wait-key KEY ...] [--text] [--expect-unavailable] [--timeout-ms N]
//
// Options fall back to RIDESYNC_WS_URL, RIDESYNC_TOKEN and RIDESYNC_DOC_URL. The token is sent as the
// `token` query parameter of the WebSocket URL. The client finds the document, writes every --set (one
// change), then waits until every --wait-for field has that value, and prints one JSON line:
//   {"ok": true, "peer_id", "document_id", "wrote", "saw", "doc", "heads"}
// or {"ok": false, "stage", "error"} with exit status 1. Strings are written as scalar strings
// (ImmutableString), because a plain JS string becomes a collaborative text object, which a flat-map
// reader on the server sees as a nested object; --text writes them as text to exercise that case.
// With --expect-unavailable, success means the server refused to share the document.
// --edit writes a ridesync shared-document edit (engine/ride/schema.py): key `edit.<this actor>.<n>`, value
// the JSON string {"field", "value", "t", "device", "role", "seen": null}, as the schema's flat scalar keys.

import { ImmutableString, getActorId } from "@automerge/automerge"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { parseArgs } from "node:util"

const { values: args } = parseArgs({
  options: {
    url: { type: "string", default: process.env.RIDESYNC_WS_URL },
    token: { type: "string", default: process.env.RIDESYNC_TOKEN },
    doc: { type: "string", default: process.env.RIDESYNC_DOC_URL },
    set: { type: "string", multiple: true, default: [] },
    edit: { type: "string", multiple: true, default: [] },
    device: { type: "string", default: "" },
    role: { type: "string", default: "app" },
    "wait-for": { type: "string", multiple: true, default: [] },
    "wait-key": { type: "string", multiple: true, default: [] },
    text: { type: "boolean", default: false },
    "expect-unavailable": { type: "boolean", default: false },
    "timeout-ms": { type: "string", default: "20000" },
    "peer-id": { type: "string" },
  },
})

function out(obj, code) {
  process.stdout.write(JSON.stringify(obj) + "\n")
  process.exitCode = code
}

function pairs(list, stage) {
  return list.map(item => {
    const eq = item.indexOf("=")
    if (eq < 1) throw Object.assign(new Error(`expected key=JSON, got ${item}`), { stage })
    const raw = item.slice(eq + 1)
    let value
    try {
      value = JSON.parse(raw)
    } catch {
      value = raw // a bare word is a string
    }
    return [item.slice(0, eq), value]
  })
}

function plain(value) {
  // ImmutableString and text both read back as something JSON can print.
  return JSON.parse(JSON.stringify(value ?? null))
}

async function main() {
  let stage = "args"
  if (!args.url || !args.doc) throw Object.assign(new Error("--url and --doc are required"), { stage })
  const timeoutMs = Number(args["timeout-ms"])
  const writes = pairs(args.set, stage)
  const edits = pairs(args.edit, stage)
  const waits = pairs(args["wait-for"], stage)

  const url = new URL(args.url)
  if (args.token) url.searchParams.set("token", args.token)
  const adapter = new WebSocketClientAdapter(url.toString(), 1000)
  const repo = new Repo({
    network: [adapter],
    peerId: args["peer-id"] ?? `interop-${process.pid}`,
    sharePolicy: async () => true,
  })
  const deadline = AbortSignal.timeout(timeoutMs)
  try {
    stage = "find"
    let handle
    try {
      handle = await repo.find(args.doc, { signal: deadline })
    } catch (err) {
      if (args["expect-unavailable"] && !deadline.aborted) {
        out({ ok: true, unavailable: true, error: String(err.message ?? err) }, 0)
        return
      }
      throw Object.assign(err, { stage })
    }
    if (args["expect-unavailable"]) {
      throw Object.assign(new Error("document was shared, expected it to be unavailable"), { stage })
    }

    stage = "write"
    const edited = []
    if (writes.length > 0 || edits.length > 0) {
      const actor = getActorId(handle.doc())
      handle.change(d => {
        for (const [key, value] of writes) {
          d[key] = typeof value === "string" && !args.text ? new ImmutableString(value) : value
        }
        let n = 1
        for (const [field, value] of edits) {
          while (d[`edit.${actor}.${n}`] !== undefined) n++
          const body = { field, value, t: Date.now() / 1000, device: args.device, role: args.role, seen: null }
          d[`edit.${actor}.${n}`] = new ImmutableString(JSON.stringify(body))
          edited.push(`edit.${actor}.${n}`)
        }
      })
    }

    stage = "wait"
    const matches = () =>
      waits.every(([key, value]) => JSON.stringify(plain(handle.doc()[key])) === JSON.stringify(value)) &&
      args["wait-key"].every(key => handle.doc()[key] !== undefined)
    if (!matches()) {
      await new Promise((resolve, reject) => {
        const onChange = () => {
          if (matches()) {
            handle.off("change", onChange)
            resolve()
          }
        }
        handle.on("change", onChange)
        deadline.addEventListener("abort", () => {
          handle.off("change", onChange)
          reject(new Error(`timed out waiting for ${JSON.stringify([Object.fromEntries(waits), args["wait-key"]])}`))
        })
      })
    }
    const doc = handle.doc()
    out(
      {
        ok: true,
        peer_id: repo.peerId,
        document_id: handle.documentId,
        wrote: Object.fromEntries(writes),
        edited,
        saw: Object.fromEntries([...waits.map(([key]) => key), ...args["wait-key"]].map(key => [key, plain(doc[key])])),
        doc: plain(doc),
        heads: handle.heads(),
      },
      0
    )
  } catch (err) {
    out({ ok: false, stage: err.stage ?? stage, error: String(err.message ?? err) }, 1)
  } finally {
    await repo.shutdown().catch(() => {})
  }
}

main()
  .catch(err => out({ ok: false, stage: err.stage ?? "main", error: String(err.message ?? err) }, 1))
  // The adapter's reconnect timers would keep a failed run alive; stdout to a pipe is synchronous here.
  .finally(() => process.exit(process.exitCode ?? 0))
