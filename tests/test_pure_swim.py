"""The SWIM core and its datagrams (pure), with hypothesis: the wire format
round-trips and fails only with ProtocolError; on a deterministic in-memory
network, live members are never declared dead, the dead become known dead
to all, and views converge after a partition heals."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pycircuit.errors import ProtocolError
from pycircuit.server._members import ALIVE, DEAD, DIED, JOIN, LEFT, SUSPECT, Update
from pycircuit.server._swim import Ack, Gossip, Nack, Ping, PingReq, Swim, SwimConfig, Sync
from pycircuit.server._swim_wire import MEMBERS_VERSION, Sealer, decode, derive_key, encode
from swim_net import Net

# -- the wire ---------------------------------------------------------------------------
text = st.text(max_size=40)
u32 = st.integers(0, 2**32 - 1)
updates = st.lists(
    st.builds(Update, st.integers(ALIVE, LEFT), text, text, u32, text), max_size=12
).map(tuple)
messages = st.one_of(
    st.builds(Ping, u32, text, updates),
    st.builds(Ack, u32, updates),
    st.builds(PingReq, u32, text, text, updates),
    st.builds(Nack, u32),
    st.builds(Sync, st.booleans(), st.booleans(), updates),
    st.builds(Gossip, updates),
)
SEALER = Sealer(derive_key(b"k" * 32))


@given(text, text, messages, st.booleans())
def test_wire_round_trip(src_id, src_url, msg, sealed):
    sealer = SEALER if sealed else None
    assert decode(encode(src_id, src_url, msg, sealer), sealer) == (src_id, src_url, msg)


@given(st.binary(max_size=300), st.booleans())
def test_wire_decoder_raises_only_protocol_error(data, sealed):
    try:
        decode(data, SEALER if sealed else None)
    except ProtocolError:
        pass


@given(text, messages, st.integers(0, 400), st.integers(1, 255))
def test_wire_corrupted_datagram_raises_protocol_error_only(src, msg, at, xor):
    for sealer in (None, SEALER):
        data = bytearray(encode(src, "u", msg, sealer))
        data[at % len(data)] ^= xor
        try:
            decode(bytes(data), sealer)
        except ProtocolError:
            pass
        if sealer is not None:
            with pytest.raises(ProtocolError):  # any change to a sealed datagram is caught
                decode(bytes(data), sealer)


def test_wire_other_version_is_refused_naming_both():
    data = bytearray(encode("Xa", "u", Nack(1)))
    data[2] = MEMBERS_VERSION + 1
    with pytest.raises(
        ProtocolError, match=f"version {MEMBERS_VERSION}.*version {MEMBERS_VERSION + 1}"
    ):
        decode(bytes(data))


def test_wire_plain_and_sealed_and_other_keys_do_not_mix():
    plain, sealed = encode("Xa", "u", Nack(1)), encode("Xa", "u", Nack(1), SEALER)
    with pytest.raises(ProtocolError, match="only sealed"):
        decode(plain, SEALER)
    with pytest.raises(ProtocolError, match="no key"):
        decode(sealed)
    with pytest.raises(ProtocolError, match="authentication"):
        decode(sealed, Sealer(derive_key(b"other")))


# -- the core, step by step ---------------------------------------------------------------
def two() -> tuple[Swim, Swim]:
    a, b = Swim("Xa", "ua"), Swim("Xb", "ub")
    out = a.join("Xb", "ub", 0.0)
    assert [e.kind for e in out.events] == [JOIN]
    for dst, msg in out.sends:
        assert dst == "ub"
        for dst2, reply in b.on_message("Xa", "ua", msg, 0.0).sends:
            a.on_message("Xb", "ub", reply, 0.0)
    return a, b


def test_join_sync_makes_both_know_each_other():
    a, b = two()
    assert a.alive() == b.alive() == [("Xa", "ua"), ("Xb", "ub")]


def test_refusal_is_proof_of_death():
    a, _ = two()
    out = a.on_refused("ub", 1.0)
    assert [(e.kind, e.id) for e in out.events] == [(DIED, "Xb")]
    assert a.state("Xb") == DEAD and a.alive() == [("Xa", "ua")]


def test_suspect_refutes_with_higher_incarnation():
    a, b = two()
    out = b.on_message("Xa", "ua", Gossip((Update(SUSPECT, "Xb", "ub", 0, "Xa"),)), 1.0)
    assert b.inc == 1 and b.awareness == 1  # Lifeguard: being suspected hints at our own slowness
    out = b.tick(10.0)
    sent = [u for _, m in out.sends for u in getattr(m, "updates", ()) if u.id == "Xb"]
    assert Update(ALIVE, "Xb", "ub", 1) in sent


def test_unanswered_probe_leads_to_suspicion_then_death():
    cfg = SwimConfig()
    a, _ = two()
    now, kinds = 0.0, []
    while now < 30 and a.state("Xb") != DEAD:
        now = a.next_deadline()
        kinds += [e.kind for e in a.tick(now).events]  # b never answers
    assert kinds[:2] == ["suspect", DIED] and a.state("Xb") == DEAD
    assert now < cfg.period * 3 + cfg.suspicion_mult * cfg.period * cfg.suspicion_max_mult + 1


# -- the network properties -----------------------------------------------------------------
slow = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@slow
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(3, 12),
    crashed=st.integers(0, 2),
    latency=st.floats(0.001, 0.08),
    refuse=st.booleans(),
)
def test_live_answering_members_are_never_declared_dead(seed, n, crashed, latency, refuse):
    net = Net(n, seed=seed, latency=(0.0005, latency))
    for url in list(net.nodes)[:crashed]:
        net.down[url] = "refuse" if refuse else "silent"
    net.run_until(60.0)
    live = {node.id for url, node in net.nodes.items() if url not in net.down}
    wrong = [
        (t, who, ev) for t, who, ev in net.events if ev.kind in (DIED, "left") and ev.id in live
    ]
    assert wrong == []


@slow
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(4, 14),
    crashed=st.integers(1, 3),
    loss=st.floats(0, 0.1),
    refuse=st.booleans(),
)
def test_dead_members_become_known_dead_by_all(seed, n, crashed, loss, refuse):
    net = Net(n, seed=seed, loss=loss)
    net.run_until(5.0)
    gone = set()
    for url in list(net.nodes)[1 : 1 + crashed]:
        net.down[url] = "refuse" if refuse else "silent"
        gone.add(net.nodes[url].id)
    net.run_until(5.0 + 60.0)
    for who, view in net.views().items():
        assert not gone & set(view), f"{who} still lists {gone & set(view)}"


@slow
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(4, 14),
    cut=st.integers(1, 13),
    loss=st.floats(0, 0.05),
    joined=st.booleans(),
)
def test_views_converge_after_a_partition_heals(seed, n, cut, loss, joined):
    net = Net(n, seed=seed, loss=loss, converged=not joined)
    net.run_until(10.0)
    urls = list(net.nodes)
    for url in urls[: max(1, cut % n)]:
        net.side[url] = 1
    net.run_until(40.0)
    net.side.clear()
    net.run_until(40.0 + 60.0)
    everyone = sorted(node.id for node in net.nodes.values())
    for who, view in net.views().items():
        assert view == everyone, who


def test_the_datagram_key_is_rfc5869_hkdf_sha256():
    """derive_key is written with hmac (no import at start-up); it must give
    the key cryptography's HKDF gives, or servers of one version would not
    understand each other's datagrams."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from pycircuit.server._swim_wire import _INFO

    for secret in (b"", b"k" * 32, os.urandom(48)):
        ref = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"pycircuit", info=_INFO)
        assert derive_key(secret) == ref.derive(secret)
