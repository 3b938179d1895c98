"""Command line: ``python -m attnbook bench SUITE [--device DEV] [--quick | --full] [--out DIR | --store]``.

``bench list`` lists the suites. A run writes to ``$ATTNBOOK_RESULTS`` or ``./attnbook-results``;
``--store`` replaces the book's stored result in ``attnbook/results`` (and ``--force`` lets a quick
run replace a full one there).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from attnbook.bench import run_suite, user_results_dir
    from attnbook.config import default_device
    from attnbook.registry import suite_info, suites

    parser = argparse.ArgumentParser(prog="attnbook", description="Benchmarks of the attention-complexity book.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a benchmark suite and write its labelled JSON result")
    bench.add_argument("suite", help="suite name, or 'list' to list them")
    bench.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the fastest present)")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=None, help="small sizes (CPU-friendly)")
    size.add_argument("--full", dest="quick", action="store_false", help="full sizes")
    where = bench.add_mutually_exclusive_group()
    where.add_argument("--out", default=None,
                       help=f"results folder (default: $ATTNBOOK_RESULTS or ./{user_results_dir()})")
    where.add_argument("--store", action="store_true", help="replace the book's stored result in attnbook/results")
    bench.add_argument("--force", action="store_true", help="with --store: let a quick run replace a full one")
    args = parser.parse_args(argv)

    if args.suite == "list":
        for name in suites():
            print(f"{name:20s} {suite_info(name).doc}")
        return 0
    try:
        result = run_suite(args.suite, device=args.device or default_device(), quick=args.quick,
                           out_dir=args.out or "user", store=args.store, force=args.force)
    except (ValueError, PermissionError) as err:
        print(f"attnbook bench: {err}", file=sys.stderr)
        return 2
    print(f"{len(result['rows'])} rows on {result['meta']['device']} -> {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
