"""The lean HTTP/1.1 client the upstream backends talk through: framing, keep-alive, credentials, malformed answers."""
import base64
import contextlib
import os
import socket
import ssl
import subprocess
import threading

import pytest

from shim import generation as g
from shim.backends import httpclient
from shim.backends.httpclient import Client, HTTPError
from shim.backends.openai_compat import OpenAICompatBackend
from shim.config import BackendConfig
from shim.errors import UpstreamError
from tests.fake_http import FakeHTTP
from tests.support import HI, run


@pytest.fixture
def fake():
    with FakeHTTP() as mock:
        mock.server()
        yield mock


def url_of(fake, path="/x"):
    return fake.server().url + path


@contextlib.contextmanager
def raw_server(*answers):
    """A loopback server answering each request on one connection with the next of answers (raw bytes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            for answer in answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                received.append(data)
                conn.sendall(answer)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        listener.close()
        thread.join(5)


def test_a_kept_alive_connection_carries_the_next_request(fake):
    fake.add("POST", url_of(fake), body="one")
    fake.add("POST", url_of(fake), body="two")
    client = Client()
    for expected in (b"one", b"two"):
        with client.request("POST", url_of(fake), {"a": 1}) as response:
            assert response.status == 200 and response.read() == expected
    assert [c.connection for c in fake.calls] == [1, 1]
    assert fake.calls[0].request.json == {"a": 1}
    assert fake.calls[0].request.headers["Content-Type"] == "application/json"


def test_an_answer_not_read_to_its_end_closes_its_connection(fake):
    fake.add("POST", url_of(fake), body="a long answer", framing="chunked")
    client = Client()
    with client.request("POST", url_of(fake), b"{}") as response:
        assert response.status == 200
    client.request("POST", url_of(fake), b"{}").close()
    assert [c.connection for c in fake.calls] == [1, 2]


def test_an_idle_connection_older_than_idle_seconds_is_not_reused(fake, monkeypatch):
    fake.add("GET", url_of(fake), body="x")
    client = Client()
    with client.request("GET", url_of(fake)) as response:
        response.read()
    monkeypatch.setattr(httpclient, "IDLE_SECONDS", 0.0)
    with client.request("GET", url_of(fake)) as response:
        response.read()
    assert [c.connection for c in fake.calls] == [1, 2]


def test_a_cancel_flag_set_while_the_answer_is_awaited_interrupts_the_wait_and_closes_the_connection(fake):
    fake.add("POST", url_of(fake), body="late", stall=5)
    cancel = g.Cancel()
    threading.Timer(0.1, cancel.set).start()
    client = Client(read_timeout=5)
    with pytest.raises(httpclient.Interrupted):
        client.request("POST", url_of(fake), b"{}", cancel=cancel)
    assert fake.server().hung_up(timeout=2), "the upstream sees the connection close"
    assert not any(client._idle.values()), "the connection is not pooled"


def test_an_answer_awaited_with_a_cancel_flag_is_read_and_its_connection_reused(fake):
    fake.add("POST", url_of(fake), body="one", stall=0.3)
    fake.add("POST", url_of(fake), body="two")
    client = Client()
    for expected in (b"one", b"two"):
        with client.request("POST", url_of(fake), b"{}", cancel=g.Cancel()) as response:
            assert response.read() == expected
    assert [c.connection for c in fake.calls] == [1, 1] and fake.server().hang_ups == 0


def test_a_cancel_flag_does_not_lift_the_read_timeout(fake):
    fake.add("POST", url_of(fake), body="late", stall=5)
    with pytest.raises(httpclient.ReadTimeout):
        Client(read_timeout=0.6).request("POST", url_of(fake), b"{}", cancel=g.Cancel())


def test_a_connection_reset_by_the_upstream_while_idle_is_replaced_not_failed(fake):
    fake.add("POST", url_of(fake), body="x")
    client = Client()
    with client.request("POST", url_of(fake), b"{}") as response:
        response.read()
    fake.server().close_idle_connections()
    with client.request("POST", url_of(fake), b"{}") as response:
        assert response.read() == b"x"
    assert [c.connection for c in fake.calls] == [1, 2]


def test_credentials_in_the_url_become_basic_auth_and_never_reach_the_host_header(fake):
    fake.add("GET", url_of(fake), body="x")
    port = fake.server().url.rsplit(":", 1)[1]
    client = Client({"Authorization": "Bearer not-this-one"})
    with client.request("GET", f"http://us%40er:p%3Ass@127.0.0.1:{port}/x") as response:
        response.read()
    headers = fake.calls[0].request.headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert headers["Host"] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("headers", [{"X-A": "one\r\nX-Injected: yes"}, {"X-A": "v\n"}, {"Bad Name": "v"},
                                     {"": "v"}])
def test_a_header_that_would_break_the_request_is_refused_when_configured(headers):
    with pytest.raises(ValueError):
        Client(headers)
    with pytest.raises(ValueError, match="backend 'up'"):
        OpenAICompatBackend(BackendConfig(name="up", type="openai", urls=("http://127.0.0.1:9/v1",), headers=headers))


def test_interim_1xx_answers_are_passed_over():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with raw_server(answer) as (url, _):
        with Client().request("POST", url + "/x", b"{}") as response:
            assert response.status == 200 and response.read() == b"ok"


def test_repeated_headers_are_joined_and_names_are_lowercase():
    answer = b"HTTP/1.1 200 OK\r\nX-Tag: a\r\nx-tag: b\r\nContent-Length: 0\r\n\r\n"
    with raw_server(answer) as (url, _):
        with Client().request("GET", url) as response:
            assert response.headers["x-tag"] == "a, b" and response.read() == b""


def test_a_no_body_answer_leaves_its_connection_reusable():
    answers = (b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    with raw_server(*answers) as (url, received):
        client = Client()
        with client.request("POST", url, b"{}") as response:
            assert response.status == 204 and response.complete
        with client.request("POST", url, b"{}") as response:
            assert response.read() == b"z"
        assert len(received) == 2  # both on the one connection the raw server accepts


@pytest.mark.parametrize("answer, message", [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not HTTP"),
    (b"HTTP/1.1 OK 200\r\n\r\n", "not HTTP"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "Content-Length"),
])
def test_an_answer_that_is_not_http_is_an_error_naming_what_is_wrong(answer, message):
    with raw_server(answer) as (url, _):
        with pytest.raises(HTTPError, match=message):
            Client().request("GET", url)


@pytest.mark.parametrize("body, message", [
    (b"zz\r\nab\r\n0\r\n\r\n", "chunk size"),
    (b"2\r\nabcdef\r\n0\r\n\r\n", "longer than its size"),
    (b"-1\r\nab\r\n0\r\n\r\n", "chunk size"),
    (b"1_0\r\nab\r\n0\r\n\r\n", "chunk size"),
    (b"+2\r\nab\r\n0\r\n\r\n", "chunk size"),
])
def test_malformed_chunks_are_an_error(body, message):
    with raw_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body) as (url, _):
        with Client().request("GET", url) as response, pytest.raises(HTTPError, match=message):
            response.read()


def test_a_head_longer_than_max_head_is_refused(monkeypatch):
    monkeypatch.setattr(httpclient, "MAX_HEAD", 100)
    with raw_server(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 300 + b"\r\n\r\n") as (url, _):
        with pytest.raises(HTTPError, match="too long"):
            Client().request("GET", url)


def test_a_redirect_is_not_followed_and_the_error_says_where_it_points(fake):
    url = fake.server().url
    fake.add("POST", url + "/v1/chat/completions", status=308, headers={"Location": "https://elsewhere.test/v1"})
    backend = OpenAICompatBackend(BackendConfig(name="up", type="openai", urls=(url + "/v1",)))
    with pytest.raises(UpstreamError, match="308: a redirect to https://elsewhere.test/v1"):
        run(backend, g.GenerationRequest(model="m", messages=HI))


def test_an_open_stream_holds_only_the_bytes_it_has_not_taken(fake):
    gate = threading.Event()
    fake.add("GET", url_of(fake), body=[b"line one\n", gate, b"line two\n"], framing="chunked")
    with Client().request("GET", url_of(fake)) as response:
        pieces = response.pieces()
        assert next(pieces) == b"line one\n"
        assert len(response._conn.buf) <= 2  # at most the chunk's own CRLF: no read buffer is held
        gate.set()
        assert list(pieces) == [b"line two\n"]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_body_read_with_an_idle_interval_gives_an_empty_piece_per_silent_interval(fake, framing):
    fake.add("GET", url_of(fake), body=[b"one\n", 0.35, b"two\n"], framing=framing)
    client = Client(read_timeout=5.0)
    with client.request("GET", url_of(fake)) as response:
        pieces = [p for p in response.pieces(0.1) if p is not None]  # (None: a wait begins)
    assert b"".join(pieces) == b"one\ntwo\n" and pieces.count(b"") == 3 and pieces[-1] == b"two\n"
    assert response.complete


def test_an_idle_interval_does_not_wait_past_a_sized_body_and_leaves_its_connection_reusable(fake):
    for _ in range(2):
        fake.add("GET", url_of(fake), body=[b"one\n", 0.15, b"two\n"], framing="length")
    client = Client(read_timeout=5.0)
    for _ in range(2):
        with client.request("GET", url_of(fake)) as response:
            pieces = [p for p in response.pieces(0.1) if p is not None]
            assert pieces == [b"one\n", b"", b"two\n"] and response._conn.sock.gettimeout() == 5.0
    assert [c.connection for c in fake.calls] == [1, 1]


def test_silence_is_told_wherever_the_framing_leaves_off_even_inside_a_chunk():
    """The answer arrives in segments cut inside a chunk's framing (as a server writing size, data and CRLF apart
    does), with a silence after each: every wait gives empty pieces, none blocks past the idle interval."""
    segments = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none\n", b"\r\n", b"4\r", b"\ntwo\n\r\n",
                b"0\r\n\r\n"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for segment in segments:
                conn.sendall(segment)
                threading.Event().wait(0.35)
    threading.Thread(target=serve, daemon=True).start()
    try:
        with Client(read_timeout=5.0).request("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/") as response:
            pieces = [p for p in response.pieces(0.1) if p is not None]
    finally:
        listener.close()
    assert b"".join(pieces) == b"one\ntwo\n" and response.complete
    one, two = pieces.index(b"one\n"), pieces.index(b"two\n")
    assert set(pieces[one + 1:two]) == {b""} and len(pieces[one + 1:two]) >= 6, "three silences of 0.35 s each"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl), as (cert path, key path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                           "-out", str(cert)], capture_output=True)
    if made.returncode:
        pytest.skip(f"openssl cannot make a certificate here: {made.stderr[-200:]!r}")
    return str(cert), str(key)


@contextlib.contextmanager
def tls_server(certificate, answer):
    """A loopback HTTPS server answering one request with answer (a tuple: its parts, 0.25 s apart)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(65536)
                for i, part in enumerate(answer if isinstance(answer, tuple) else (answer,)):
                    threading.Event().wait(0.25 if i else 0)
                    tls.sendall(part)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(5)


def test_a_tls_body_read_with_an_idle_interval_tells_its_silences(certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsec", b"ret")
    with tls_server(certificate, answer) as url:
        with Client(read_timeout=5.0).request("GET", url + "/x") as response:
            pieces = [p for p in response.pieces(0.1) if p is not None]
    assert b"".join(pieces) == b"secret" and pieces.count(b"") >= 1


def test_https_is_verified_against_the_ca_store_sslcertfile_names(certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    with tls_server(certificate, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret") as url:
        with Client().request("GET", url + "/x") as response:
            assert response.read() == b"secret"


def test_an_https_upstream_whose_certificate_is_not_trusted_is_not_connected_to(certificate, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with tls_server(certificate, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret") as url:
        with pytest.raises(httpclient.ConnectError, match="SSLCertVerificationError"):
            Client().request("GET", url + "/x")


def test_a_forked_process_opens_its_own_connections_and_the_parent_keeps_its_own(fake):
    fake.add("GET", url_of(fake), body="x")
    client = Client()
    with client.request("GET", url_of(fake)) as response:
        response.read()
    pid = os.fork()
    if pid == 0:  # the child: one request, then out without running pytest's teardown
        code = 1
        try:
            with client.request("GET", url_of(fake)) as response:
                code = 0 if response.read() == b"x" else 1
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    with client.request("GET", url_of(fake)) as response:
        response.read()
    assert [c.connection for c in fake.calls] == [1, 2, 1]
