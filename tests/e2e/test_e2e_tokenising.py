"""The local runtime's tokenising under gevent, in a process of its own: a client that leaves stops the work."""
import subprocess
import sys

WATCHED = """
from gevent import monkey
monkey.patch_all()
import time
from shim import generation as g
from shim.backends.llamacpp import embedded_model_path
from shim.backends.tokenizer import Vocabulary
from shim.errors import Cancelled
from shim.threads import call_in_thread, watching

vocab, cancel = Vocabulary(embedded_model_path()), g.Cancel()
text = "Some words of text, again and again. " * 100_000
started = time.monotonic()
gone = lambda: time.monotonic() > started + 0.2  # the client hangs up after 0.2 s
try:
    with watching(gone, cancel.set, 0.05):
        call_in_thread(lambda: vocab.tokenize([text], cancel))
    print("ran to the end")
except Cancelled:
    print(f"stopped after {time.monotonic() - started:.2f}s")
whole = time.monotonic()
vocab.tokenize([text])
print(f"whole {time.monotonic() - whole:.2f}s")
"""


def test_a_client_leaving_while_its_prompt_tokenises_stops_the_work():
    """Under gevent, as in the server: the request waits on an OS thread, a watcher sees the client go."""
    out = subprocess.run([sys.executable, "-c", WATCHED], capture_output=True, text=True, timeout=120).stdout
    stopped, whole = out.split()[2], out.split()[4]
    assert out.startswith("stopped") and float(stopped[:-1]) < float(whole[:-1]), out
