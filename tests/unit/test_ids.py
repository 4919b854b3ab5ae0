"""Random ids cut from blocks of os.urandom bytes: hex of the asked size, never repeated, not shared across a fork."""
import os
import re

from shim import ids


def test_ids_are_hex_of_the_asked_size_and_never_repeat():
    count = 3 * ids.BLOCK  # several refills of each size
    for nbytes in (8, 12, 5):
        made = [ids.token_hex(nbytes) for _ in range(count)]
        assert all(re.fullmatch(f"[0-9a-f]{{{2 * nbytes}}}", token) for token in made)
        assert len(set(made)) == count


def test_one_read_of_random_bytes_serves_many_ids(monkeypatch):
    reads = []
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: reads.append(n) or real(n))
    ids._tokens.clear()
    made = [ids.token_hex(12) for _ in range(100)]
    assert len(reads) == 1 and len(set(made)) == 100


def test_a_forked_child_never_hands_out_what_its_parent_hands_out_next():
    ids.token_hex(12)  # the parent holds a block of ids not yet handed out
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(writer, "".join(ids.token_hex(12) for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    assert os.waitpid(child, 0)[1] == 0
    with os.fdopen(reader) as pipe:
        theirs = pipe.read()
    ours = [ids.token_hex(12) for _ in range(50)]
    assert len(theirs) == 50 * 24
    assert not {theirs[i:i + 24] for i in range(0, len(theirs), 24)} & set(ours)
