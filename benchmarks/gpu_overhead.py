"""The overhead benchmark on a CUDA GPU with bf16 autocast, data kept on the device.

Same measurements as ``benchmarks.overhead`` (trial overhead share of the example study, and
``growsearch.training.train`` vs a plain PyTorch loop), with ``train.device: cuda`` and
``train.amp: bf16``; the datasets fit on the GPU, so growsearch keeps them there and every batch
is an index slice on the device (the plain loop does the same). Without CUDA it says why on
stderr, writes nothing and exits with code 2.

    python -m benchmarks.gpu_overhead --quick
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common as common
from benchmarks import overhead

__all__ = ["cuda_problem", "run"]

NAME = "gpu_overhead"


def cuda_problem() -> str | None:
    """Why the GPU benchmark cannot run here, or None."""
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return "PyTorch has CUDA support but finds no GPU"
    return None


def _no_cuda_message(problem: str) -> str:
    return (
        f"no CUDA device: {problem}; run this benchmark on a machine with a GPU and a CUDA build "
        "of PyTorch (nothing was measured or written)"
    )


def run(mode: str, out: Path, log: Any = print) -> dict[str, Any]:
    problem = cuda_problem()
    if problem is not None:
        raise RuntimeError(_no_cuda_message(problem))
    setup = replace(overhead.FULL if mode == "full" else overhead.QUICK, device="cuda", amp="bf16")
    return overhead.run(setup, out, tag=NAME, log=log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    problem = cuda_problem()
    if problem is not None:  # before the output folder exists: a failed run leaves nothing
        print(f"{parser.prog}: error: {_no_cuda_message(problem)}", file=sys.stderr)
        return 2
    out = common.out_dir(NAME, args.out)
    payload = overhead.header(argv, args.mode, name=NAME)
    payload["result"] = run(args.mode, out)
    path = common.save_json(out / f"{NAME}.json", payload)
    print(f"\nwrote {path}")
    overhead.report(payload["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
