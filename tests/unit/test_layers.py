"""The layers hold: pure protocol translation does no I/O, blueprints never reach into backends."""
import ast
import pathlib

import pytest

SHIM = pathlib.Path(__file__).resolve().parents[2] / "shim"
IO_LIBRARIES = {"flask", "werkzeug", "requests", "httpx", "ollama", "llama_cpp", "urllib3", "gevent", "socket", "redis",
                "sqlite3"}


def imports(path, source=None):
    """Every module a file imports, anywhere in it (inside functions too), as absolute dotted names."""
    package = ".".join(path.relative_to(SHIM.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules(*parts):
    return sorted((SHIM.joinpath(*parts)).rglob("*.py")) if SHIM.joinpath(*parts).is_dir() else [SHIM.joinpath(*parts)]


@pytest.mark.parametrize("path", modules("protocols") + modules("generation.py") + modules("streaming.py")
                         + modules("errors.py") + modules("ids.py"), ids=lambda p: str(p.relative_to(SHIM)))
def test_pure_layers_import_no_io_library(path):
    bad = {name for name in imports(path) if name.split(".")[0] in IO_LIBRARIES}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("protocols"), ids=lambda p: str(p.relative_to(SHIM)))
def test_protocols_import_neither_backends_nor_blueprints(path):
    bad = {name for name in imports(path) if name.startswith(("shim.backends", "shim.api"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("api"), ids=lambda p: str(p.relative_to(SHIM)))
def test_blueprints_never_import_backends(path):
    bad = {name for name in imports(path) if name.startswith("shim.backends")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [SHIM / "api" / "lane.py", SHIM / "api" / "exchange.py"],
                         ids=lambda p: str(p.relative_to(SHIM)))
def test_the_lane_and_the_exchange_do_without_flask(path):
    # The lane answers generation requests without Flask; only werkzeug's helpers for reading a body are used.
    bad = {name for name in imports(path) if name.split(".")[0] == "flask"}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_layer_check_sees_relative_and_nested_imports():
    source = "def f():\n    from ..backends import llamacpp\n    import flask\n"
    assert {"shim.backends.llamacpp", "flask"} <= imports(SHIM / "protocols" / "probe.py", source)


def test_the_contract_and_the_protocols_type_check():
    import subprocess
    import sys
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "setup.cfg"], cwd=SHIM.parent,
                          capture_output=True, text=True, timeout=300)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
