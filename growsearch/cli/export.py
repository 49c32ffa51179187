"""``growsearch export MODEL_ID --out PATH``: weights + spec for use outside growsearch."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from growsearch.cli._common import add_storage_args
from growsearch.cli._study import open_store
from growsearch.exceptions import UserError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="write a model's weights (safetensors) and spec (JSON); optionally ONNX/torch.export",
        description="Writes OUT.safetensors and OUT.json (the spec); with --onnx and/or "
        "--torch-export also OUT.onnx / OUT.pt2 (a torch.export program with a dynamic batch "
        "axis, load it with torch.export.load). The checkpoint's sha256 is verified.",
    )
    p.add_argument("model_id", type=int, metavar="MODEL_ID")
    add_storage_args(p, study_required=False)
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--onnx", action="store_true", help="also export ONNX (needs the onnx package)")
    p.add_argument(
        "--torch-export", action="store_true", help="also write a torch.export program (.pt2)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from growsearch.checkpoints import load_model, save_checkpoint

    if args.onnx:
        import importlib.util

        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(
                f"--onnx needs {' and '.join(missing)}: pip install 'growsearch[onnx]' "
                "(or pip install onnx onnxscript)"
            )
    store = open_store(args.storage, args.study)
    record = store.get_model(args.model_id) if 0 < args.model_id < 2**63 else None
    if record is None or (args.study is not None and record.study != args.study):
        where = f"study '{args.study}'" if args.study is not None else "this storage"
        raise UserError(f"no model with id {args.model_id} in {where}; see growsearch lineage")
    if record.checkpoint is None or record.status != "finished":
        raise UserError(f"model {args.model_id} has status '{record.status}' and no checkpoint")
    out = Path(args.out)
    if out.suffix in (".safetensors", ".json", ".onnx", ".pt2"):
        out = out.with_suffix("")
    if not out.parent.exists():
        raise UserError(f"folder {out.parent} does not exist; create it or choose another --out")
    spec, model = load_model(record.checkpoint, expected_sha256=record.sha256)
    written = []
    save_checkpoint(
        out.with_suffix(".safetensors"),
        spec,
        model.state_dict(),
        metadata={"model_id": record.model_id, "val_accuracy": record.val_accuracy},
    )
    written.append(out.with_suffix(".safetensors"))
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(spec.to_json(indent=2) + "\n")
    os.replace(tmp, out.with_suffix(".json"))
    written.append(out.with_suffix(".json"))
    model.eval()
    # Batch size 2 in the example: torch.export (ONNX's exporter too) specialises a size-1 dim.
    example = torch.zeros(2, *spec.input_shape)
    if args.torch_export:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(out.with_suffix(".pt2")))
        written.append(out.with_suffix(".pt2"))
    if args.onnx:
        # verbose=False: the exporter's progress lines would go to stdout, which carries only
        # the JSON summary below.
        torch.onnx.export(
            model,
            (example,),
            str(out.with_suffix(".onnx")),
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            verbose=False,
        )
        written.append(out.with_suffix(".onnx"))
        data = out.with_suffix(".onnx.data")  # large weights go to a side file
        if data.exists():
            written.append(data)
    print(json.dumps({"model_id": record.model_id, "files": [str(p) for p in written]}))
    return 0
