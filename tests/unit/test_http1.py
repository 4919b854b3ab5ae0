"""shim.http1: plain request heads read the lean way come out exactly as gunicorn's parser reads them, and every
other head is left to that parser."""
import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from hypothesis import given, settings, strategies as st

from shim import http1
from shim.http1 import PlainRequest, plain_head, scheme_of
from shim.worker import SettledConfig

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
NGINX = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: shim.example\r\nX-Forwarded-For: 10.1.2.3\r\n"
         b"X-Forwarded-Proto: https\r\nContent-Length: %d\r\nContent-Type: application/json\r\n"
         b"Authorization: Bearer sk-x\r\n\r\n" % len(BODY)) + BODY
SDK = (b"POST /api/chat?x=1&y=%%2F HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nAccept-Encoding: gzip, deflate\r\n"
       b"Accept: */*\r\nConnection: keep-alive\r\nUser-Agent: ollama-python/0.5 (x86_64 linux) Python/3.11\r\n"
       b"Content-Length: %d\r\nContent-Type: application/json\r\n\r\n" % len(BODY)) + BODY

PLAIN = {
    "nginx": NGINX,
    "sdk": SDK,
    "get": b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n",
    "no fields": b"GET / HTTP/1.1\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    "delete with query": b"DELETE /v1/responses/resp_1?a=b?c HTTP/1.1\r\nHost: h\r\n\r\n",
    "empty value, blanks around values": b"GET /x HTTP/1.1\r\nX-Empty:\r\nX-Pad: \t a b \t\r\nHost:h\r\n\r\n",
    "connection close": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    "connection list": b"GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n",
    "empty body": b"POST /api/chat HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "scheme header: http": b"GET / HTTP/1.1\r\nX-Forwarded-Proto: http\r\n\r\n",
    "scheme header: other": b"GET / HTTP/1.1\r\nX-Forwarded-Ssl: on\r\n\r\n",
    "scheme headers agreeing": b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n\r\n",
    "percent-encoded path": b"GET /a%20b/%C3%A9;p=1 HTTP/1.1\r\n\r\n",
    # gunicorn's own body reader, which both ways share, refuses these:
    "signed Content-Length": b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nhi",
    "hex Content-Length": b"POST / HTTP/1.1\r\nContent-Length: 0x2\r\n\r\nhi",
}

LEFT = {
    "Transfer-Encoding": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "CL and TE": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Expect": b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    "bad Expect": b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nhi",
    "Upgrade": b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n",
    "duplicate Content-Length": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
    "duplicate Host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "repeated list field": b"GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "bare LF in a field": b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n",
    "bare LF ending the line": b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    "lone CR": b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
    "NUL": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "DEL": b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
    "latin-1 value": b"GET / HTTP/1.1\r\nX-A: caf\xe9\r\n\r\n",
    "underscore name": b"GET / HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    "empty name": b"GET / HTTP/1.1\r\n: v\r\n\r\n",
    "leading CRLF": b"\r\nGET / HTTP/1.1\r\n\r\n",
    "HTTP/1.0": b"GET / HTTP/1.0\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\n\r\n",
    "PUT": b"PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\n\r\n",
    "absolute-form": b"GET http://h/x?y HTTP/1.1\r\n\r\n",
    "authority-form": b"GET h:80 HTTP/1.1\r\n\r\n",
    "double slash": b"GET //x/y?z HTTP/1.1\r\n\r\n",
    "fragment": b"GET /x#frag HTTP/1.1\r\n\r\n",
    "quote in target": b'GET /x"y HTTP/1.1\r\n\r\n',
    "space in target": b"GET /x y HTTP/1.1\r\n\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\n\r\n",
    "non-ASCII target": b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
    "scheme headers disagreeing": b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
    "long request line": b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
    "long field": b"GET / HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    "many fields": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(120)) + b"\r\n",
    "PROXY line": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n",
    "no end of head": b"GET / HTTP/1.1\r\nHost: h\r\n",
}


class Peer:
    """A socket that hands out the given pieces, one a recv."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def recv(self, size):
        return self.pieces.pop(0) if self.pieces else b""


class Parser(RequestParser):
    mesg_class = None


def settled(**settings):
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return SettledConfig(cfg)


def outcome(message_class, pieces, cfg, peer=("127.0.0.1", 5000), count=2):
    """What a parser making message_class messages reads from the pieces: up to `count` requests, each as its
    fields, body and whether the connection then closes, or the error it ends in."""
    parser = type("P", (RequestParser,), {"mesg_class": message_class})(cfg, Peer(pieces), peer)
    read = []
    try:
        for _ in range(count):
            req = next(parser)
            read.append((req.method, req.uri, req.path, req.query, req.fragment, req.version, req.headers,
                         req.scheme, req.body.read(), req.should_close()))
    except StopIteration:
        read.append("end")
    except Exception as err:  # noqa: BLE001 - the error is the outcome compared
        read.append((type(err).__name__, str(err)))
    return read


@pytest.fixture
def lean(monkeypatch):
    """For each head a PlainRequest parsed: True when read the lean way, False when left to gunicorn's parser."""
    taken = []
    plain, general = PlainRequest.parse, Request.parse

    def parse_plain(self, unreader):
        taken.append(True)
        return plain(self, unreader)

    def parse_general(self, unreader):
        if isinstance(self, PlainRequest):
            taken[-1] = False
        return general(self, unreader)
    monkeypatch.setattr(PlainRequest, "parse", parse_plain)
    monkeypatch.setattr(Request, "parse", parse_general)
    return taken


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("peer", [("127.0.0.1", 5000), ("203.0.113.9", 5000)], ids=["trusted", "untrusted"])
def test_a_plain_head_reads_as_gunicorn_reads_it(name, peer, lean):
    raw, cfg = PLAIN[name], settled()
    assert outcome(PlainRequest, [raw], cfg, peer) == outcome(Request, [raw], cfg, peer)
    assert lean[0] is True


@pytest.mark.parametrize("name", LEFT)
def test_any_other_head_is_left_to_gunicorns_parser(name, lean):
    raw, cfg = LEFT[name], settled()
    assert outcome(PlainRequest, [raw], cfg) == outcome(Request, [raw], cfg)
    assert lean[0] is False


def test_pipelined_requests_and_a_body_in_pieces_read_as_gunicorn_reads_them(lean):
    first = NGINX[:-10]
    pieces = [first, NGINX[-10:] + SDK[:30], SDK[30:] + PLAIN["get"]]
    cfg = settled()
    assert outcome(PlainRequest, pieces, cfg, count=4) == outcome(Request, pieces, cfg, count=4)
    # The first head and the third came whole in one read; the second came in two and was gunicorn's; the fourth
    # read found the connection's end.
    assert lean == [True, False, True, True]


def test_gunicorns_limits_and_settings_hold_on_the_lean_way():
    raw = b"GET /abcdef HTTP/1.1\r\nX-A: 12345\r\nX-B: 1\r\n\r\n"
    for cfg in (settled(limit_request_line=10), settled(limit_request_field_size=9), settled(limit_request_fields=1),
                settled(secure_scheme_headers={"X-A": "12345"}), settled(forwarded_allow_ips="10.0.0.1")):
        assert outcome(PlainRequest, [raw], cfg) == outcome(Request, [raw], cfg)
    proxied = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n"
    cfg = settled(proxy_protocol="v1", proxy_allow_ips="*")
    assert not cfg.plain_http1
    assert outcome(PlainRequest, [proxied], cfg) == outcome(Request, [proxied], cfg)
    assert outcome(PlainRequest, [proxied], cfg)[0][6] == []


def test_a_peers_trust_is_remembered_and_bounded(monkeypatch):
    cfg = settled(forwarded_allow_ips="10.0.0.0/8")
    raw = b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert outcome(PlainRequest, [raw], cfg, ("10.9.8.7", 1))[0][7] == "https"
    assert outcome(PlainRequest, [raw], cfg, ("11.9.8.7", 1))[0][7] == "http"
    assert cfg.trusted_peers == {"10.9.8.7": True, "11.9.8.7": False}
    monkeypatch.setattr(http1, "TRUST_CACHE_SIZE", 2)
    assert outcome(PlainRequest, [raw], cfg, ("10.0.0.1", 1))[0][7] == "https"
    assert cfg.trusted_peers == {"10.0.0.1": True}


def test_plain_head_and_scheme_of_as_pure_functions():
    assert plain_head(b"GET /a?b HTTP/1.1\r\nHost: h \r\n\r\nrest", 0, 0, 0) == ("GET", "/a?b", [("HOST", "h")],
                                                                                 b"rest")
    assert plain_head(b"GET /a HTTP/1.1\r\nHost: h\r\n", 0, 0, 0) is None
    assert outcome(PlainRequest, [b""], settled()) == outcome(Request, [b""], settled()) == ["end"]
    secure = {"X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}
    assert scheme_of([("X-FORWARDED-PROTO", "https")], secure, "http") == "https"
    assert scheme_of([("X-FORWARDED-PROTO", "HTTPS")], secure, "http") == "http"
    assert scheme_of([], secure, "https") == "https"
    assert scheme_of([("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "off")], secure, "http") is None


LINE_PARTS = st.sampled_from([b"GET", b"POST", b"DELETE", b"HEAD", b"PUT", b"get", b"G\x00T"])
TARGETS = st.one_of(st.sampled_from([b"/", b"/v1/chat/completions", b"//x", b"*", b"/a#b", b"http://h/"]),
                    st.binary(max_size=12).map(lambda b: b"/" + b))
FIELDS = st.lists(st.tuples(
    st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-Proto", b"Connection",
                     b"X_A", b"X-A", b"Expect", b"", b"A B"]),
    st.one_of(st.sampled_from([b"2", b"0", b"https", b"close", b"chunked", b" v ", b"", b"\t"]),
              st.binary(max_size=6))), max_size=5)
SEPARATORS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n"])


@settings(max_examples=400, deadline=None)
@given(LINE_PARTS, TARGETS, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.10"]), FIELDS, SEPARATORS,
       st.binary(max_size=8), st.integers(min_value=1, max_value=80))
def test_any_head_reads_on_the_lean_way_as_gunicorn_reads_it(method, target, version, fields, separator, tail, cut):
    raw = (method + b" " + target + b" " + version + b"\r\n"
           + b"".join(name + b":" + value + separator for name, value in fields) + b"\r\n" + tail)
    cfg = settled()
    for pieces in ([raw], [raw[:cut], raw[cut:]]):
        assert outcome(PlainRequest, pieces, cfg) == outcome(Request, pieces, cfg)


BODY_READS = [("read", ()), ("read", (None,)), ("read", (-1,)), ("read", (0,)), ("read", (3,)), ("read", (500,)),
              ("readline", ()), ("readline", (2,)), ("readline", (-5,)), ("readlines", ()), ("readlines", (1,)),
              ("read", ("3",)), ("read", (1.5,)), ("readline", ("x",))]


def first_request(message_class, pieces, cfg):
    return next(type("P", (RequestParser,), {"mesg_class": message_class})(cfg, Peer(pieces), ("127.0.0.1", 5000)))


def reads(body, steps):
    """What each of steps (method, args) read from body (or the TypeError it raised), then what iterating gives."""
    done = []
    for name, args in steps:
        try:
            done.append(getattr(body, name)(*args))
        except TypeError as err:
            done.append(("TypeError", str(err)))
    return done + [list(body)]


@pytest.mark.parametrize("data", [b"", b"x", b'{"a":1}', b"line one\nline two\n\nlast", b"\n\n"])
@pytest.mark.parametrize("start", range(len(BODY_READS)))
def test_a_body_that_came_with_its_head_reads_as_gunicorns_body_reads(data, start, lean):
    raw = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(data) + data
    cfg = settled()
    ours, theirs = first_request(PlainRequest, [raw], cfg), first_request(Request, [raw], cfg)
    assert type(ours.body) is http1.WholeBody and lean == [True]
    steps = BODY_READS[start:] + BODY_READS[:start]
    assert reads(ours.body, steps) == reads(theirs.body, steps)


def test_a_body_still_arriving_or_of_an_odd_length_is_gunicorns_to_read():
    cfg = settled()
    cases = {  # pieces: whether the body is read whole with the head
        (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", b"cde"): False,
        (b"POST /x HTTP/1.1\r\nContent-Length: 05\r\n\r\nabcde",): True,
        (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n\r\n",): True,
        (b"POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\nabcde",): False,
        (b"POST /x HTTP/1.1\r\nContent-Length: \xd9\xa5\r\n\r\nabcde",): False,
    }
    for pieces, whole in cases.items():
        assert outcome(PlainRequest, pieces, cfg) == outcome(Request, pieces, cfg)
        try:
            req = first_request(PlainRequest, pieces, cfg)
        except Exception:  # noqa: BLE001 - refused, as gunicorn refuses it (compared above)
            assert not whole
            continue
        assert (type(req.body) is http1.WholeBody) == whole
        assert req.body.read() == b"abcde"
