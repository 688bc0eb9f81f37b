"""``python -m bench [NAME ...] [--n N]``: run benchmarks (all when no name is given)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = [
    "delivery", "webhook", "pipeline", "intake", "latency", "scale", "sla", "store", "s3", "ocr", "console",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("names", nargs="*", choices=[*BENCHES, []], help="benchmarks to run (default: all)")
    p.add_argument("--n", type=int, default=None, help="messages / items (each bench has its default)")
    p.add_argument("--imap-host", default=None, help="run intake/latency against an existing IMAP server")
    p.add_argument("--imap-port", type=int, default=993)
    p.add_argument("--user", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--replicas", type=int, default=1)
    args = p.parse_args(argv)
    failed = 0
    for name in args.names or BENCHES:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            print(f"bench {name}: not available ({exc})", file=sys.stderr)
            continue
        try:
            mod.run(args)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
