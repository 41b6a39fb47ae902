"""The ``nde`` command: one sub-command per module of :mod:`nde.cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nde import __version__
from nde.cli import irregular, quickstart, tsdiff


def _add_tpp_parser(subparsers: object) -> None:
    # The command line is a shell over both packages; the `nde` library itself never imports `tpp`.
    from tpp.cli import add_parser

    add_parser(subparsers)


# Each entry adds one sub-command's parser, whose defaults carry `run(args) -> int`.
SUBCOMMANDS = (quickstart.add_parser, irregular.add_fit_parser, irregular.add_predict_parser, tsdiff.add_parser,
               _add_tpp_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nde",
        description="Neural differential equations and stochastic-process models for time series.",
    )
    parser.add_argument("--version", action="version", version=f"nde {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # Input errors of the library are ValueError subclasses whose messages say what to fix.
        print(f"nde {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
