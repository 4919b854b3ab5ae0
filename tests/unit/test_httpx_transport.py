"""LeanClient (the httpx client under the official ollama client) and Transport, against in-memory answers."""
import contextlib
import gzip
import json

import httpx
import pytest

from shim.backends.httpclient import ConnectError, HTTPError, ReadTimeout
from shim.backends.httpx_transport import SILENCE, SILENCES, BrokenOff, LeanClient, Transport, cancelled_by
from shim.streaming import HEARTBEAT, PAUSE


def echo(request):
    return httpx.Response(200, headers=[("Set-Cookie", "s=1")], json={"url": str(request.url)})


@pytest.mark.parametrize("base, path", [
    ("http://h:1", "/api/chat"), ("http://h:1/sub/", "/api/chat"), ("http://h:1/sub", "api/tags"),
    ("http://h:1", "http://other:2/x?y=1"), ("http://h:1", "/api/blobs/sha256:ab%20cd"),
])
def test_urls_merge_as_httpx_merges_them_every_time(base, path):
    lean, plain = (cls(base_url=base, transport=httpx.MockTransport(echo)) for cls in (LeanClient, httpx.Client))
    expected = plain.get(path).json()["url"]
    assert [lean.get(path).json()["url"] for _ in range(2)] == [expected] * 2


def test_a_new_base_url_is_used_for_a_path_already_asked_for():
    client = LeanClient(base_url="http://h:1", transport=httpx.MockTransport(echo))
    client.get("/api/tags")
    client.base_url = "http://g:2/v/"
    assert client.get("/api/tags").json()["url"] == "http://g:2/v/api/tags"


def test_only_so_many_paths_are_kept():
    client = LeanClient(base_url="http://h:1", transport=httpx.MockTransport(echo))
    urls = [client.get(f"/api/blobs/{n}").json()["url"] for n in range(LeanClient.MAX_URLS + 10)]
    assert urls[-1] == f"http://h:1/api/blobs/{LeanClient.MAX_URLS + 9}"
    assert len(client._kept_urls) == LeanClient.MAX_URLS


def test_no_cookie_is_kept():
    seen = []
    client = LeanClient(base_url="http://h:1", transport=httpx.MockTransport(lambda r: seen.append(r) or echo(r)))
    client.get("/a")
    client.get("/a")
    assert len(client.cookies) == 0 and [r.headers.get("cookie") for r in seen] == [None, None]


OLLAMA_HEADERS = {"content-type": "application/json", "accept": "application/json", "user-agent": "ollama-python"}
BUILT = {
    "json": ("POST", "/api/chat", {"json": {"model": "m", "messages": [{"role": "user", "content": "h\u00e9 \u2028"}]}}),
    "json-get": ("GET", "/api/x", {"json": {"a": [1, 2.5, None, True]}}),
    "json-delete": ("DELETE", "/api/delete", {"json": {"model": "m"}}),
    "empty-json": ("POST", "/api/x", {"json": {}}),
    "no-body-get": ("GET", "/api/tags", {}),
    "no-body-post": ("POST", "/api/x", {}),
    "no-body-head": ("HEAD", "/api/blobs/sha256:ab", {}),
    "lower-method": ("post", "/api/chat", {"json": {"a": 1}}),
    "timeout": ("POST", "/api/chat", {"json": {"a": 1}, "timeout": 3.0}),
    "extensions": ("POST", "/api/chat", {"json": {"a": 1}, "extensions": {"trace": None}}),
    "own-timeout": ("POST", "/api/chat", {"json": {"a": 1}, "extensions": {"timeout": {"read": 1}}}),
    "bytes": ("POST", "/api/blobs/sha256:ab", {"content": b"blob"}),
    "params": ("GET", "/api/x", {"params": {"q": "1"}}),
    "headers": ("POST", "/api/x", {"json": {"a": 1}, "headers": {"X-A": "b"}}),
}


@pytest.mark.parametrize("own", [OLLAMA_HEADERS, {}, {"Host": "v.example", "Content-Length": "0"}],
                         ids=["ollama", "none", "host-and-length"])
@pytest.mark.parametrize("case", BUILT)
def test_requests_are_built_exactly_as_httpx_builds_them(case, own):
    method, path, kwargs = BUILT[case]
    made = [cls(base_url="http://h:1/v/", headers=own, timeout=9.0).build_request(method, path, **kwargs)
            for cls in (LeanClient, httpx.Client)]
    lean, plain = ((r.method, r.url, r.headers.raw, r.read(), r.extensions) for r in made)
    assert lean == plain


class Answer:
    """What shim's Client.send gives back: a head read, a body in pieces."""

    def __init__(self, pieces, headers, status=200, reason="OK"):
        self.status, self.reason, self.headers, self._pieces = status, reason, headers, pieces
        self.closed = False

    def pieces(self, idle=None):
        """The pieces; None (a wait begins) and b"" (idle seconds of silence) only when asked with idle, as shim's;
        an exception among them is raised there."""
        self.idle = idle
        for piece in self._pieces:
            if isinstance(piece, Exception):
                raise piece
            if idle is not None or piece:
                yield piece

    def close(self):
        self.closed = True


class Sender:
    """A shim Client stand-in answering every request with the same pieces."""

    def __init__(self, pieces, headers, status=200, reason="OK", refusal=None):
        self.answer_with = lambda: Answer(pieces, headers, status, reason)
        self.refusal = refusal
        self.sent = []

    def send(self, method, url, headers, body=b"", cancel=None):
        self.sent.append((method, url, headers, body))
        if self.refusal:
            raise self.refusal
        self.last = self.answer_with()
        return self.last


def lines_read(pieces, headers=None):
    """(the lines the ollama client reads through LeanClient over Transport, those httpx itself gives, closed)."""
    headers = {"content-type": "application/x-ndjson", **(headers or {})}
    sender = Sender(pieces, headers)
    with LeanClient(base_url="http://h:1", transport=Transport(sender)).stream("POST", "/api/chat", json={}) as r:
        lean = list(r.iter_lines())
    plain = httpx.Response(200, headers=list(headers.items()), stream=httpx.ByteStream(b"".join(pieces)))
    return lean, list(plain.iter_lines()), sender.last.closed


@pytest.mark.parametrize("pieces", [
    [b'{"a": 1}\n{"b": 2}\n'], [b'{"a": 1}\n', b'{"b"', b': 2}\n', b'{"c": 3}'], [b'{"a": 1}\r', b'\n{"b": 2}\r\n'],
    [b'{"a": "\xc3', b'\xa9"}\n'], [b'{"a": 1}\n\n{"b": 2}\n'], [b'{"a": "\xff"}\n'], [b"x" * 10, b"y" * 10, b"\n"],
    [], [b""],
], ids=["together", "split-anyhow", "crlf-split", "utf8-split", "blank-line", "not-utf8", "long-line", "none",
        "empty"])
def test_ndjson_lines_read_as_httpx_reads_them(pieces):
    lean, plain, closed = lines_read(pieces)
    assert lean == plain and closed


def test_ndjson_lines_keep_the_unicode_line_separators_a_json_string_may_hold():
    """Ollama (Go) leaves U+0085 unescaped in JSON strings; httpx would cut the line there."""
    text = '{"c": "one\u0085two\u2028three\x1cfour"}'
    lean, plain, _ = lines_read([(text + "\n").encode()])
    assert lean == [text] and plain != [text]


@pytest.mark.parametrize("headers, pieces", [
    ({"content-encoding": "gzip"}, [gzip.compress('{"a": "\u00e9"}\n{"b": 2}\n'.encode())]),
    ({"content-type": "application/x-ndjson; charset=latin-1"}, ['{"a": "\u00e9"}\n'.encode("latin-1")]),
], ids=["gzip", "latin-1"])
def test_a_body_to_decode_first_is_read_by_httpx(headers, pieces):
    lean, plain, _ = lines_read(pieces, headers)
    assert lean == plain and "\u00e9" in lean[0]


def silence(line):
    """PAUSE or HEARTBEAT for a silence's line, else the line."""
    part = json.loads(line)
    return SILENCES[part[SILENCE]] if SILENCE in part else line


def sent_within_idle(pieces, stream=True):
    sender = Sender(pieces, {"content-type": "application/x-ndjson"})
    with cancelled_by(None, idle=0.5):
        response = LeanClient(base_url="http://h:1", transport=Transport(sender)).send(
            LeanClient(base_url="http://h:1").build_request("POST", "/api/chat", json={}), stream=stream)
    return sender, response


def test_silences_read_within_cancelled_by_idle_are_lines_of_their_own_between_the_lines_not_in_them():
    sender, response = sent_within_idle([b'{"a": 1}\n{"b"', None, b"", b"", b': 2}\n', None, b'{"c": 3}\n'])
    read = [silence(line) for line in response.iter_lines()]
    assert sender.last.idle == 0.5 and sender.last.closed
    assert read == ['{"a": 1}', PAUSE, HEARTBEAT, HEARTBEAT, '{"b": 2}', PAUSE, '{"c": 3}']


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_read_whole_within_cancelled_by_idle_is_read_without_silences(stream):
    sender, response = sent_within_idle([b'{"a": ', b'1}\n'], stream)
    assert response.read() == b'{"a": 1}\n' and response.json() == {"a": 1} and sender.last.idle is None


def test_a_silence_line_names_a_key_no_upstream_knows():
    assert SILENCE.startswith("shim.silence.") and len(SILENCE) >= len("shim.silence.") + 32
    assert sorted(SILENCES.values(), key=id) == sorted([PAUSE, HEARTBEAT], key=id)



class Pieces(httpx.SyncByteStream):
    """A body streamed as it would come off a connection (in-memory content httpx reads at once)."""

    def __init__(self, *pieces):
        self.pieces = pieces

    def __iter__(self):
        yield from self.pieces


def answer_with(status, headers=(), body=b"{}"):
    return lambda request: httpx.Response(status, headers=list(headers), stream=Pieces(body[:3], body[3:]))


def sent_by(cls, handler, stream, **client_options):
    """(the response, what was seen of it) sent through a client of cls over handler."""
    client = cls(base_url="http://h:1", transport=httpx.MockTransport(handler), **client_options)
    request = client.build_request("POST", "/api/chat", json={"a": 1})
    response = client.send(request, stream=stream)
    before = (response.is_stream_consumed, response.is_closed)
    body = response.read()
    response.close()
    return response, (response.status_code, list(response.headers.multi_items()), body, before,
                      response.request is request, [r.status_code for r in response.history], response.encoding,
                      response.next_request and str(response.next_request.url), response.elapsed.total_seconds() >= 0,
                      client.is_closed)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("answer", [answer_with(200, [("Content-Type", "application/json")], b'{"a": 1}'),
                                    answer_with(404, body=b'{"error": "no"}'),
                                    answer_with(307, [("Location", "/elsewhere")], b""),
                                    answer_with(302, body=b"moved, no Location")],
                         ids=["200", "404", "redirect", "redirect-without-location"])
def test_a_request_is_sent_and_answered_as_httpx_does_it(stream, answer):
    lean, seen = sent_by(LeanClient, answer, stream)
    assert seen == sent_by(httpx.Client, answer, stream)[1]


@pytest.mark.parametrize("options", [{"auth": ("u", "p")}, {"follow_redirects": True},
                                     {"event_hooks": {"request": [lambda r: r.headers.update({"X-Hook": "1"})]}}],
                         ids=["auth", "follow-redirects", "hooks"])
def test_auth_redirects_and_hooks_are_left_to_httpx(options):
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == "/api/chat":
            return answer_with(307, [("Location", "/there")], b"")(request)
        return answer_with(200, body=b'{"at": "/there"}')(request)
    lean = sent_by(LeanClient, handler, False, **options)[1]
    plain = sent_by(httpx.Client, handler, False, **options)[1]
    assert lean == plain
    halves = seen[:len(seen) // 2], seen[len(seen) // 2:]
    assert [(r.url.path, r.headers.get("authorization"), r.headers.get("x-hook")) for r in halves[0]] == [
        (r.url.path, r.headers.get("authorization"), r.headers.get("x-hook")) for r in halves[1]]


def test_a_closed_client_refuses_to_send_as_httpx_does():
    client = LeanClient(base_url="http://h:1", transport=httpx.MockTransport(echo))
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get("/a")


ANSWERS = {
    "json": (200, "OK", {"content-type": "application/json", "content-length": "8"}, [b'{"a":', b' 1}']),
    "ndjson": (200, "OK", {"content-type": "application/x-ndjson"}, [b'{"a": 1}\n', b'{"b": 2}\n']),
    "404": (404, "Not Found", {"content-type": "application/json"}, [b'{"error": "model \'m\' not found"}']),
    "500-text": (500, "Internal Server Error", {"content-type": "text/plain; charset=utf-8"}, [b"boom \xc3\xa9"]),
    "redirect": (307, "Temporary Redirect", {"location": "/elsewhere"}, []),
    "redirect-without-location": (302, "Found", {}, [b"moved"]),
    "gzip": (200, "OK", {"content-encoding": "gzip", "content-type": "application/json"}, [gzip.compress(b'{"z": 1}')]),
    "latin-1": (200, "OK", {"content-type": "text/plain; charset=latin-1"}, ["caf\u00e9".encode("latin-1")]),
    "no-reason": (200, "", {}, [b"{}"]),
}


def answered(cls, case, stream, **options):
    """What is seen of the answer to a JSON request made through a client of cls (LeanClient over shim's Transport,
    or httpx.Client over an httpx transport answering the same)."""
    status, reason, headers, pieces = ANSWERS[case]
    if cls is LeanClient:
        transport = Transport(Sender(pieces, headers, status, reason))
    else:
        transport = httpx.MockTransport(lambda r: httpx.Response(
            status, headers=list(headers.items()), stream=Pieces(*pieces), extensions={"reason_phrase": reason.encode()}))
    client = cls(base_url="http://h:1/v/", headers=OLLAMA_HEADERS, transport=transport, **options)
    if stream:
        with client.stream("POST", "/api/chat", json={"model": "m\u00e9"}) as response:
            before = (response.is_stream_consumed, response.is_closed)
            body = response.read()
    else:
        response = client.request("POST", "/api/chat", json={"model": "m\u00e9"})
        before = (response.is_stream_consumed, response.is_closed)
        body = response.read()
    try:
        response.raise_for_status()
        raised = None
    except httpx.HTTPStatusError as err:
        raised = (str(err), err.request is response.request, err.response is response)
    request = response.request
    return (response.status_code, response.reason_phrase, response.http_version, list(response.headers.multi_items()),
            body, response.text, response.encoding, response.num_bytes_downloaded, before,
            (response.is_stream_consumed, response.is_closed), response.is_success, raised,
            (request.method, str(request.url), request.headers.raw, request.read(), request.extensions),
            response.next_request and (response.next_request.method, str(response.next_request.url)),
            response.history, response.elapsed.total_seconds() >= 0, str(response.url))


@pytest.mark.parametrize("options", [{}, {"auth": ("u", "p")}], ids=["straight", "through-httpx"])
@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
@pytest.mark.parametrize("case", ANSWERS)
def test_a_json_request_over_the_transport_is_answered_as_httpx_answers_it(case, stream, options):
    """Sent straight through (the ollama client's requests), or by httpx's own send (a client with auth)."""
    assert answered(LeanClient, case, stream, **options) == answered(httpx.Client, case, stream, **options)


@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
def test_an_answer_that_passes_makes_no_request_or_headers_of_httpx(stream):
    sender = Sender([b'{"a": 1}'], {"content-type": "application/json"})
    client = LeanClient(base_url="http://h:1", transport=Transport(sender))
    with client.stream("POST", "/api/chat", json={"a": 1}) if stream else contextlib.nullcontext(
            client.request("POST", "/api/chat", json={"a": 1})) as response:
        assert json.loads(response.raise_for_status().read()) == {"a": 1}
    assert response._made == {} and response.is_closed and sender.last.closed
    assert sender.sent == [("POST", "http://h:1/api/chat", [
        (b"Host", b"h:1"), (b"Accept", b"*/*"), (b"Accept-Encoding", b"gzip, deflate"), (b"Connection", b"keep-alive"),
        (b"User-Agent", f"python-httpx/{httpx.__version__}".encode()), (b"Content-Length", b"7"),
        (b"Content-Type", b"application/json")], b'{"a":1}')]


@pytest.mark.parametrize("options", [{"params": {"q": "1"}}, {"headers": {"X-A": "b"}}, {"content": b"blob"},
                                     {"timeout": 3.0}, {"extensions": {"trace": None}}],
                         ids=["params", "headers", "content", "timeout", "extensions"])
def test_a_request_asking_more_than_json_is_built_and_sent_by_httpx(options):
    sender = Sender([b"{}"], {})
    client = LeanClient(base_url="http://h:1", transport=Transport(sender))
    sent = client.request("POST", "/api/x", **({"json": {"a": 1}} if "content" not in options else {}), **options)
    expected = httpx.Client(base_url="http://h:1").build_request(
        "POST", "/api/x", **({"json": {"a": 1}} if "content" not in options else {}), **options)
    assert sent.request is not None and sender.sent == [
        ("POST", str(expected.url), expected.headers.raw, expected.read())]


@pytest.mark.parametrize("options, header", [
    ({"auth": ("u", "p")}, (b"Authorization", b"Basic dTpw")), ({"follow_redirects": True}, None),
    ({"event_hooks": {"request": [lambda r: r.headers.update({"X-Hook": "1"})]}}, (b"X-Hook", b"1")),
], ids=["auth", "follow-redirects", "hooks"])
def test_a_client_with_auth_redirects_or_hooks_sends_through_httpx(options, header):
    sender = Sender([b"{}"], {})
    response = LeanClient(base_url="http://h:1", transport=Transport(sender), **options).request("POST", "/api/x",
                                                                                                json={})
    assert "request" in response._made  # httpx built it, and sent it
    assert header is None or header in sender.sent[0][2]


@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
@pytest.mark.parametrize("failure, expected", [(ConnectError("refused"), httpx.ConnectError),
                                               (ReadTimeout("no answer"), httpx.ReadTimeout),
                                               (HTTPError("reset"), httpx.ReadError)],
                         ids=["connect", "timeout", "read"])
def test_a_request_that_fails_raises_httpx_error_naming_the_request_httpx_would_build(failure, expected, stream):
    client = LeanClient(base_url="http://h:1/v/", transport=Transport(Sender([], {}, refusal=failure)))
    with pytest.raises(expected, match=str(failure)) as raised:
        if stream:
            with client.stream("POST", "/api/chat", json={"a": 1}):
                pass
        else:
            client.request("POST", "/api/chat", json={"a": 1})
    built = httpx.Client(base_url="http://h:1/v/").build_request("POST", "/api/chat", json={"a": 1})
    made = raised.value.request
    assert (made.method, made.url, made.headers.raw, made.read()) == (built.method, built.url, built.headers.raw,
                                                                      built.read())


@pytest.mark.parametrize("stream", [False, True], ids=["request", "stream"])
def test_an_answer_broken_off_raises_broken_off_naming_the_request(stream):
    sender = Sender([b'{"a": 1}\n', HTTPError("the connection closed in the middle of an answer")],
                    {"content-type": "application/x-ndjson"})
    client = LeanClient(base_url="http://h:1", transport=Transport(sender))
    with pytest.raises(BrokenOff, match="closed in the middle") as raised:
        if stream:
            with client.stream("POST", "/api/chat", json={}) as response:
                list(response.iter_lines())
        else:
            client.request("POST", "/api/chat", json={})
    assert str(raised.value.request.url) == "http://h:1/api/chat" and sender.last.closed


def test_lines_are_read_once_as_httpx_reads_them_once():
    sender = Sender([b'{"a": 1}\n'], {"content-type": "application/x-ndjson"})
    with LeanClient(base_url="http://h:1", transport=Transport(sender)).stream("POST", "/api/chat") as response:
        assert list(response.iter_lines()) == ['{"a": 1}'] and response.num_bytes_downloaded == 9
        with pytest.raises(httpx.StreamConsumed):
            list(response.iter_lines())
        with pytest.raises(httpx.StreamConsumed):
            response.read()
    assert response.is_closed and sender.last.closed
