"""Bytes that only the JavaScript Automerge can produce, for the bindings' hazards."""

# A document saved by @automerge/automerge (JS) after `doc.c = new Counter(5)` on `{title: "x"}`: reading
# `c` panics in the Python bindings (docs/architecture.md#automerge-hazards), which no Python code can produce
# by itself.
JS_COUNTER_DOC = bytes.fromhex(
    "856f4a8327226013009b010110d01801b6fb1e1ec5fc9f1455557b2bd101a13f132fce26888cde4c5cb5b1db9e389eb0"
    "a722afe1b7c576dddba3a1a574b00701020302130323074003430256020b010402041304150b21022304340242045604"
    "5702800102020002017e02017eabcfa5d806007e00017f00020700027f0000027f0100027f007e0163057469746c6500"
    "0103007d037e0102017d0104017d1800160578030001"
)
