"""LeanClient (the httpx client under the official ollama client) and Transport, against in-memory answers."""
import httpx
import pytest

from shim.backends.httpx_transport import LeanClient


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
    assert len(client._urls) == LeanClient.MAX_URLS


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
