"""Byte-level mutations for the fuzz properties: cut, insert, splice in tokens, repeat, flip,
truncate. `mutations(tokens)` draws a list of them; `mutate(raw, changes)` applies it."""

from __future__ import annotations

from hypothesis import strategies as st

Change = tuple  # (kind, position, *arguments)


def mutations(tokens: list[bytes]) -> st.SearchStrategy[list[Change]]:
    """One to eight changes; `tokens` are bytes that mean something to the target's format."""
    where = st.integers(0, 1 << 20)
    change = st.one_of(
        st.tuples(st.just("cut"), where, st.integers(1, 4096)),
        st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("insert"), where, st.sampled_from(tokens)),
        st.tuples(st.just("repeat"), where, st.integers(1, 200), st.integers(2, 60)),
        st.tuples(st.just("flip"), where, st.integers(0, 255)),
        st.tuples(st.just("truncate"), where),
    )
    return st.lists(change, min_size=1, max_size=8)


def mutate(raw: bytes, changes: list[Change]) -> bytes:
    data = bytearray(raw)
    for kind, position, *args in changes:
        at = position % (len(data) + 1)
        if kind == "cut":
            del data[at : at + args[0]]
        elif kind == "insert":
            data[at:at] = args[0]
        elif kind == "repeat":
            length, times = args
            data[at:at] = bytes(data[at : at + length]) * times
        elif kind == "flip" and at < len(data):
            data[at] = args[0]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)
