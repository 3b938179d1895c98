"""The command line: ``python -m attnbook bench ...`` and ``python -m attnbook gpu ...``.

Usage::

    python -m attnbook bench SUITE [--device DEV] [--quick | --full] [--out DIR | --store]
    python -m attnbook gpu [--plan] [--force]

``bench list`` lists the suites. A run writes to ``$ATTNBOOK_RESULTS`` or ``./attnbook-results``;
``--store`` replaces the book's stored result in ``attnbook/results`` (and ``--force`` lets a quick
run replace a full one there). ``gpu`` is the one-command GPU edition (``make gpu``,
:mod:`attnbook.bench.gpu`): it prints its plan, then runs every suite on CUDA and stores the
results; without CUDA it refuses with exit code 2. ``gpu --plan`` prints the plan only, anywhere.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    """The command line: ``bench SUITE`` (or ``bench list``) and ``gpu``."""
    from attnbook.bench import user_results_dir

    parser = argparse.ArgumentParser(
        prog="attnbook", description="Benchmarks of the attention-complexity book."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a benchmark suite and write its labelled JSON result")
    bench.add_argument("suite", help="suite name, or 'list' to list them")
    bench.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: the fastest present)"
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="quick",
        action="store_true",
        default=None,
        help="small sizes (CPU-friendly)",
    )
    size.add_argument("--full", dest="quick", action="store_false", help="full sizes")
    where = bench.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        default=None,
        help=f"results folder (default: $ATTNBOOK_RESULTS or ./{user_results_dir()})",
    )
    where.add_argument(
        "--store", action="store_true", help="replace the book's stored result in attnbook/results"
    )
    bench.add_argument(
        "--force", action="store_true", help="with --store: let a quick run replace a full one"
    )
    gpu = sub.add_parser(
        "gpu", help="the GPU edition: every suite on CUDA, results stored (at most 15 minutes)"
    )
    gpu.add_argument(
        "--plan", action="store_true", help="print the plan and exit (runs nothing, needs no GPU)"
    )
    gpu.add_argument(
        "--force", action="store_true", help="let a quick sweep replace a stored full one"
    )
    return parser


def _bench(args) -> int:
    from attnbook.bench import run_suite
    from attnbook.config import default_device
    from attnbook.registry import suite_info, suites

    if args.suite == "list":
        for name in suites():
            print(f"{name:20s} {suite_info(name).doc}")
        return 0
    try:
        result = run_suite(
            args.suite,
            device=args.device or default_device(),
            quick=args.quick,
            out_dir=args.out or "user",
            store=args.store,
            force=args.force,
        )
    except (ValueError, PermissionError) as err:
        print(f"attnbook bench: {err}", file=sys.stderr)
        return 2
    print(f"{len(result['rows'])} rows on {result['meta']['device']} -> {result['path']}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    return _gpu(args) if args.command == "gpu" else _bench(args)


def _gpu(args) -> int:
    import torch

    from attnbook.bench.gpu import format_plan, plan, run_plan

    steps = plan()
    if args.plan:
        print(format_plan(steps, "CUDA (plan only; nothing runs)"))
        return 0
    if not torch.cuda.is_available():
        print(
            "attnbook gpu: CUDA is not available here (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}); the GPU edition needs an NVIDIA GPU and a CUDA build of "
            "PyTorch. "
            "Nothing was run. `python -m attnbook gpu --plan` shows what it would run.",
            file=sys.stderr,
        )
        return 2
    from attnbook.measure import describe_device

    print(format_plan(steps, describe_device("cuda")), flush=True)
    records = run_plan(steps, "cuda", force=args.force)
    stored = [r["suite"] for r in records if r["status"] == "stored"]
    print(
        f"\n{len(stored)} of {len(records)} suites stored in "
        f"{sum(r['seconds'] for r in records) / 60:.1f} min"
    )
    for r in records:
        if r["status"] != "stored":
            print(f"  {r['suite']}: {r['status']}: {r['message']}")
    return 0 if len(stored) == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
