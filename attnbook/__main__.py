"""Command line: ``python -m attnbook bench SUITE --device DEV [--quick | --full]``."""
from __future__ import annotations

import argparse
import sys

from .bench import RESULTS_DIR, run_suite, suites


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="attnbook", description="Benchmarks of the attention-complexity book.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a benchmark suite and store its labelled JSON result")
    bench.add_argument("suite", help="suite name, or 'list' to list them")
    bench.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the fastest present)")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=None, help="small sizes (CPU-friendly)")
    size.add_argument("--full", dest="quick", action="store_false", help="full sizes")
    bench.add_argument("--out", default=str(RESULTS_DIR), help="results folder (default: attnbook/results)")
    args = parser.parse_args(argv)

    if args.suite == "list":
        for name, s in sorted(suites().items()):
            print(f"{name:20s} {s.description}")
        return 0
    from .config import DEVICE

    result = run_suite(args.suite, device=args.device or DEVICE, quick=args.quick, out_dir=args.out)
    print(f"{len(result['rows'])} rows on {result['meta']['device']} -> {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
