"""python -m bench local|concurrency|slots|greedy|proxy|streams|peer|all: run benchmarks, print markdown tables (all:
every one but peer, which needs llama-cpp-python's server packages)."""
import platform
import sys
import time


def main(which):
    from . import greedy, local, peer, proxy, streams
    benches = {"local": local.single, "concurrency": local.concurrent, "slots": local.slots, "greedy": greedy.run,
               "proxy": proxy.run, "streams": streams.run, "peer": peer.run}
    chosen = [name for name in benches if name != "peer"] if which == "all" else [which]
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()} -->")
    for name in chosen:
        print(f"\n### {name}\n")
        print(benches[name]())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
