"""Hypothesis strategies for valid wire messages."""

from __future__ import annotations

from hypothesis import strategies as st

from engine.sync import wire
from engine.sync.docid import document_id_from_bytes

peer_ids = st.text(min_size=1, max_size=40)
document_ids = st.binary(min_size=16, max_size=16).map(document_id_from_bytes)
payloads = st.binary(min_size=1, max_size=256)
metadata = st.builds(wire.PeerMetadata, st.none() | st.text(max_size=30), st.none() | st.booleans())
heads_at = st.builds(
    wire.HeadsAt,
    st.lists(st.text(max_size=60), max_size=4).map(tuple),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(min_value=-(2**53) + 1, max_value=2**53 - 1, allow_nan=False),
)
str_tuples = st.none() | st.lists(st.text(max_size=20), max_size=4).map(tuple)

messages: st.SearchStrategy[wire.Message] = st.one_of(
    st.builds(wire.Join, peer_ids, metadata, str_tuples),
    st.builds(wire.Peer, peer_ids, peer_ids, metadata, st.text(max_size=5)),
    st.builds(wire.Error, peer_ids, peer_ids, st.text(max_size=100)),
    st.builds(wire.Leave, peer_ids),
    st.builds(wire.Request, peer_ids, peer_ids, document_ids, payloads),
    st.builds(wire.Sync, peer_ids, peer_ids, document_ids, payloads),
    st.builds(wire.DocUnavailable, peer_ids, peer_ids, document_ids),
    st.builds(
        wire.Ephemeral,
        peer_ids,
        peer_ids,
        document_ids,
        payloads,
        st.integers(min_value=0, max_value=2**53 - 1),
        peer_ids,
    ),
    st.builds(wire.RemoteSubscriptionChange, peer_ids, peer_ids, str_tuples, str_tuples),
    st.builds(
        wire.RemoteHeadsChanged,
        peer_ids,
        peer_ids,
        document_ids,
        st.dictionaries(st.text(max_size=20), heads_at, max_size=3).map(lambda d: tuple(d.items())),
    ),
)
