"""`concept-encoder` command line: thin verbs over the packages, one module per verb group.

  build    describe, config, pretrain, experiment, study, data mirror   (verbs that read an experiment config)
  measure  zero-shot, evaluate, analyze, k-sweep, mteb, long-context, static-student
  share    report, runs, publish, export, encode

Each group registers its own parsers and imports its heavy code only when a verb runs, so `--help` and
`--version` answer without importing torch or transformers.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import USER_ERRORS
from ..reporting import QUIET_ENV_VAR
from . import build, measure, share
from .common import HelpFormatter
from .measure import evaluation_folder  # noqa: F401  (tests and users call it by this name)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="concept-encoder", description="build, pretrain, evaluate and diagnose concept encoders",
                                     formatter_class=HelpFormatter,
                                     epilog="run `concept-encoder VERB --help` for a verb's options and examples")
    parser.add_argument("--version", action="version", version=f"concept-encoder {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for group in (build, measure, share):
        group.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet = os.environ.get(QUIET_ENV_VAR)  # --quiet sets it for this command only
    try:
        args = build_parser().parse_args(argv)
        return args.run_verb(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `runs show | head` closed the pipe: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    finally:
        if quiet is None:
            os.environ.pop(QUIET_ENV_VAR, None)
        else:
            os.environ[QUIET_ENV_VAR] = quiet
        _close_process_group()


def _close_process_group() -> None:
    """Under torchrun, leave the process group before the interpreter exits: a group left to the exit's
    destructors can abort a rank (`terminate called without an active exception`, seen once on 2 CPU ranks)."""
    if "torch.distributed" not in sys.modules:  # a verb that never touched torch has no group to leave
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
