"""The plain HTTP/1.1 request heads that proxies and SDKs send, read without gunicorn's general parser; every other
head is left to that parser, which accepts or refuses it as it always has."""
import io
import re

from gunicorn.http.message import Request, _ip_in_allow_list

REQUEST_LINE = re.compile(rb"(GET|POST|DELETE|HEAD) (/(?!/)[!$-~]*) HTTP/1\.1")
"A request line in origin-form, with no fragment (#) and no quote, for the methods shim serves."

FIELD = re.compile(rb"([!#$%&'*+\-.^`|~0-9A-Za-z]+):[ \t]*((?:[!-~](?:[ \t!-~]*[!-~])?)?)[ \t]*")
"A header line: a token name without underscores, an ASCII value (surrounding blanks are not part of it)."

LEFT_TO_GUNICORN = frozenset(("TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS"))
"Fields whose handling is more than reading them: chunked bodies, 100-continue, protocol upgrades."

TRUST_CACHE_SIZE = 4096
"Peer addresses whose trust (forwarded_allow_ips) a worker remembers; past it, it starts again."


def plain_head(data, max_line, max_fields, max_field):
    """(method, target, [(NAME, value)], the bytes after the head) when data starts with a whole plain head, else
    None. The limits are gunicorn's, 0 meaning none."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    line = REQUEST_LINE.fullmatch(lines[0])
    if line is None or len(lines[0]) > max_line > 0 or len(lines) - 1 > max_fields > 0:
        return None
    fields, seen = [], set()
    for text in lines[1:]:
        field = FIELD.fullmatch(text)
        if field is None or len(text) + 2 > max_field > 0:
            return None
        name = field[1].decode("ascii").upper()
        if name in seen or name in LEFT_TO_GUNICORN:
            return None
        seen.add(name)
        fields.append((name, field[2].decode("ascii")))
    return line[1].decode("ascii"), line[2].decode("ascii"), fields, data[end + 4:]


def scheme_of(fields, secure_scheme_headers, scheme):
    """The URL scheme the fields set (from a trusted peer), scheme when they set none, None when they disagree."""
    found = None
    for name, value in fields:
        if name in secure_scheme_headers:
            said = "https" if value == secure_scheme_headers[name] else "http"
            if found not in (None, said):
                return None
            found = said
    return found or scheme


class PlainRequest(Request):
    """gunicorn's request, its head read by plain_head when it is plain, else by gunicorn's own parser."""

    plain = False
    "Whether the head was read the lean way (shim.http1_exchange then makes its environ and response)."

    def parse(self, unreader):
        """The bytes after the head: read here when the head is plain and whole in the first read."""
        if not getattr(self.cfg, "plain_http1", False):
            return super().parse(unreader)
        data = unreader.read()
        if not data:
            raise StopIteration()
        head = plain_head(data, self.limit_request_line, self.limit_request_fields, self.limit_request_field_size)
        scheme = None if head is None else scheme_of(head[2], self._trusted_scheme_headers(head[2]), self.scheme)
        if scheme is None:
            unreader.unread(data)
            return super().parse(unreader)
        self.method, self.uri, self.headers, rest = head
        self.path, _, self.query = self.uri.partition("?")
        self.fragment, self.version, self.scheme = "", (1, 1), scheme
        self.plain = True
        # A body that came whole with the head is kept as it is; any other (or an odd length) is gunicorn's to read.
        length = next((value for name, value in self.headers if name == "CONTENT-LENGTH"), "0")
        size = int(length) if length.isdigit() else None
        if size is not None and size <= len(rest):
            self._whole, rest = rest[:size], rest[size:]
        return rest

    def set_body_reader(self):
        """gunicorn's body reader; for a body that came whole with the head, the body itself."""
        whole = getattr(self, "_whole", None)
        if whole is None:
            return super().set_body_reader()
        self.body = WholeBody(whole)
        return None

    def _trusted_scheme_headers(self, fields):
        """The secure-scheme headers this peer may set, looked up only when one of them came."""
        secure = self.cfg.secure_scheme_headers
        if not any(name in secure for name, _ in fields):
            return {}
        return secure if self._peer_is_trusted_proxy() else {}

    def _peer_is_trusted_proxy(self):
        """Whether the peer may set forwarding and scheme headers; remembered per address for the worker."""
        # gunicorn parses the address and walks the allowed networks for every request (5 us, measured).
        known = getattr(self.cfg, "trusted_peers", None)
        if known is None or not isinstance(self.peer_addr, tuple):
            return super()._peer_is_trusted_proxy()
        address = self.peer_addr[0]
        trusted = known.get(address)
        if trusted is None:
            if len(known) >= TRUST_CACHE_SIZE:
                known.clear()
            trusted = known[address] = _ip_in_allow_list(address, self.cfg.forwarded_allow_ips,
                                                         self.cfg.forwarded_allow_networks())
        return trusted


class WholeBody(io.BytesIO):
    """A request body that came whole with its head, read as gunicorn's Body reads one, without its reader's steps."""

    failed = False
    "As gunicorn's Body: reading it never failed (its parser asks before it reads past it)."

    def read(self, size=None):
        """Up to size bytes (all of them for None or a negative size)."""
        return super().read(_size(size))

    def readline(self, size=None):
        """The next line, of at most size bytes."""
        return super().readline(_size(size))

    def readlines(self, size=None):
        """The lines left (gunicorn's reads them all, whatever size says)."""
        return super().readlines()


def _size(size):
    """A read's size as gunicorn's Body takes it: TypeError for a size that is not an integer."""
    if size is None:
        return -1
    if not isinstance(size, int):
        raise TypeError("size must be an integral type")
    return max(size, -1)
