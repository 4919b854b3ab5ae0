"""Checks for scripts/check-install.sh; the standard library only, so it runs under any Python.

    python scripts/check_install.py contents DIST...   every module of shim/ is in each wheel or sdist
    python scripts/check_install.py runtime-only        (in the installed venv) only shim and what it requires
    python scripts/check_install.py ask URL             both protocols answer a chat at URL
"""
import json
import pathlib
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = {"pip", "setuptools", "wheel"}
"What a new venv holds before anything is installed."


def fail(message):
    """Stop with a message."""
    print(f"check-install: {message}", file=sys.stderr)
    sys.exit(1)


def tracked_modules():
    """shim's Python files, as git tracks them."""
    out = subprocess.run(["git", "ls-files", "shim/*.py", "shim/**/*.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def archive_names(path):
    """The file names inside a wheel, or inside an sdist without its top directory."""
    if path.endswith(".whl"):
        return set(zipfile.ZipFile(path).namelist())
    with tarfile.open(path) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def contents(paths):
    """Every tracked module of shim is in every given wheel and sdist."""
    modules = tracked_modules()
    for path in paths:
        missing = sorted(modules - archive_names(path))
        if missing:
            fail(f"{path} lacks {', '.join(missing)}")
        print(f"{pathlib.Path(path).name}: all {len(modules)} modules of shim")


def canonical(name):
    """A distribution name as pip compares them."""
    return name.lower().replace("_", "-").replace(".", "-")


def runtime_only():
    """The venv holds shim and what shim requires, transitively, with the extras asked for; nothing more."""
    from importlib import metadata

    from pip._vendor.packaging.requirements import Requirement  # pip is in every venv; packaging might not be

    dists = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    needed, todo = set(), [("shim", frozenset())]
    while todo:
        name, extras = todo.pop()
        needed.add(name)
        for line in dists[name].requires or ():
            req = Requirement(line)
            markers = [{"extra": extra} for extra in extras or {""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in markers):
                key = canonical(req.name)
                if key not in dists:
                    fail(f"{name} requires {req}, which is not installed")
                todo.append((key, frozenset(req.extras)))
    extra = sorted(set(dists) - needed - TOOLS)
    if extra:
        fail(f"the venv holds what shim does not require: {', '.join(extra)}")
    for must in ("packaging", "gevent"):  # gunicorn's gevent worker imports both; only its gevent extra brings them
        if must not in needed:
            fail(f"shim's requirements do not bring {must}, which gunicorn's gevent worker imports")
    print(f"venv: shim and the {len(needed) - 1} distributions it requires, nothing else")


def post(url, body):
    """The JSON answer to a JSON POST."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def ask(base):
    """Wait for the server at base, then get a chat answer through each protocol."""
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                fail(f"{base} did not answer /health within 300 s")
            time.sleep(0.5)
    messages = [{"role": "user", "content": "Say hello."}]
    openai = post(base + "/v1/chat/completions", {"model": "smollm2", "messages": messages, "max_tokens": 8})
    said = openai["choices"][0]["message"]["content"]
    ollama = post(base + "/api/chat", {"model": "smollm2", "messages": messages, "stream": False,
                                       "options": {"num_predict": 8}})
    if not (said.strip() and ollama["done"] and ollama["message"]["content"].strip()):
        fail(f"empty answers: {openai} {ollama}")
    print(f"{base}: OpenAI said {said!r}; Ollama said {ollama['message']['content']!r}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"contents": lambda: contents(args), "runtime-only": runtime_only, "ask": lambda: ask(args[0])}[command]()
