"""``tinygg zoo ...``: list, inspect, download, verify, register, document and publish models.

    tinygg zoo list
    tinygg zoo info Qwen/Qwen2.5-1.5B-Instruct
    tinygg zoo download facebook/dinov2-large [--dir DIR]
    tinygg zoo verify NAME_OR_DIR
    tinygg zoo add my-ckpt --from runs/stage3 --preset tiny --stage stage3 --parent tinygg-tiny-demo
    tinygg zoo card my-ckpt --eval runs/eval/metrics.json --out runs/stage3/README.md
    tinygg zoo publish my-ckpt --repo-id me/my-ckpt
    tinygg zoo convert DIR

The lead's ``tinygg/cli.py`` calls :func:`register` with its sub-parsers object.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .registry import STAGES, Entry, load_registry

logger = logging.getLogger(__name__)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def _status(entry: Entry) -> str:
    from .resolve import locate

    return "local" if entry.source.kind == "local" else ("cached" if locate(entry) is not None else "-")


def _reports_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print an expected failure as one line on stderr and return 2, instead of a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, LookupError, OSError, RuntimeError) as exc:
            print(f"tinygg zoo: error: {exc}", file=sys.stderr)
            return 2

    return run


@_reports_errors
def _cmd_list(args: argparse.Namespace) -> int:
    reg = load_registry()
    entries = [e for e in reg.entries() if args.kind in (None, e.kind)]
    rows = []
    for e in entries:
        avg = e.metrics.get("rec", {}).get("average")
        rows.append(
            [
                e.name,
                e.kind,
                e.preset or "",
                e.stage or "",
                e.source.kind,
                f"{100 * avg:.2f}" if avg is not None else "",
                _status(e),
            ]
        )
    if not rows:
        print(f"no {args.kind or 'model'}s registered")
        return 0
    print(_table(rows, ["NAME", "KIND", "PRESET", "STAGE", "SOURCE", "REC AVG", "ON DISK"]))
    return 0


@_reports_errors
def _cmd_info(args: argparse.Namespace) -> int:
    from .resolve import locate

    e = load_registry().get(args.name)
    where = locate(e)
    if args.json:
        out = e.to_mapping()
        out["origin"], out["local_dir"] = e.origin, str(where) if where else None
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ["name", e.name],
        ["kind", e.kind],
        ["preset", e.preset or ""],
        ["stage", e.stage or ""],
        ["parent", e.parent or ""],
        ["source", e.source.describe()],
        ["pinned", "yes" if e.source.pinned else "NO (branch revision)"],
        ["license", e.license or ""],
        ["registry", e.origin],
        ["on disk", str(where) if where else "not downloaded"],
    ]
    print(_table([r for r in rows if r[1]], ["FIELD", "VALUE"]))
    if e.description:
        print("\n" + e.description)
    if e.files:
        print()
        print(
            _table(
                [
                    [f.path, f.sha256[:16] + "…", f"{f.size:,}" if f.size is not None else "?"]
                    for f in e.files
                ],
                ["FILE", "SHA256", "BYTES"],
            )
        )
    if e.convert_pickle:
        print(f"\nconverted to safetensors after download: {', '.join(e.convert_pickle)}")
    for task, values in e.metrics.items():
        print(f"\n{task}: " + ", ".join(f"{k}={100 * v:.2f}" for k, v in values.items()))
    return 0


@_reports_errors
def _cmd_download(args: argparse.Namespace) -> int:
    from .resolve import download

    path = download(args.name, args.dir)
    print(path)
    return 0


@_reports_errors
def _cmd_verify(args: argparse.Namespace) -> int:
    from .resolve import verify

    report = verify(args.name)
    for c in report.checks:
        if args.verbose or c.status not in ("ok", "unchecked"):
            print(f"{c.status:>9}  {c.path}  {c.detail}")
    print(report.summary())
    return 0 if report.ok else 1


@_reports_errors
def _cmd_add(args: argparse.Namespace) -> int:
    from .add_checkpoint import add

    entry = add(
        args.name,
        args.from_dir,
        kind=args.kind,
        preset=args.preset,
        stage=args.stage,
        parent=args.parent,
        description=args.description or "",
        license=args.license,
        eval_json=args.eval or (),
        url=args.url,
        repo_id=args.repo_id,
        revision=args.revision,
        registry_path=args.registry,
        overwrite=args.overwrite,
    )
    total = sum(f.size or 0 for f in entry.files)
    print(
        f"registered {entry.name}: {len(entry.files)} files, {total:,} bytes, "
        f"source {entry.source.describe()}"
    )
    return 0


@_reports_errors
def _cmd_card(args: argparse.Namespace) -> int:
    from .model_card import card

    text = card(args.name, args.eval or ())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


@_reports_errors
def _cmd_publish(args: argparse.Namespace) -> int:
    from .hub_publish import publish

    url = publish(args.name, args.repo_id, private=args.private, eval_json=args.eval or ())
    print(url)
    return 0


@_reports_errors
def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_directory

    for p in convert_directory(args.dir):
        print(f"wrote {p}")
    return 0


ZOO_DESCRIPTION = (
    "The model zoo: pretrained components (CLIP, DINOv2, Qwen2.5) and TinyGroundingGPT checkpoints, "
    "downloaded at pinned revisions and verified by sha256. Every --model option of tinygg accepts a zoo "
    "name as well as a directory."
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``list | info | download | verify | add | card | publish | convert`` to ``sub``, the
    sub-parsers of the ``tinygg zoo`` group; each command sets ``func=handler`` (``handler(args) -> int``).
    Handlers print expected errors (unknown name, checksum mismatch, no network...) and return 2."""
    p = sub.add_parser("list", help="a table of all registered models", description="List registered models.")
    p.add_argument("--kind", choices=("component", "checkpoint"), help="only this kind")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="details of one model", description="Show a registry entry.")
    p.add_argument("name", metavar="NAME", help="zoo name (`tinygg zoo list` shows them)")
    p.add_argument("--json", action="store_true", help="print the entry as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "download",
        help="download and verify a model",
        description="Download a model's files (resuming interrupted transfers) and verify "
        "their sha256. Prints the local directory.",
    )
    p.add_argument("name", metavar="NAME", help="zoo name (`tinygg zoo list` shows them)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="put the files here (default: $TINYGG_HOME/models/NAME, or the Hugging Face cache)",
    )
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser(
        "verify",
        help="check a model's local files against the registry",
        description="Check sha256/size of a model's files, or the safetensors headers and "
        "JSON files of any checkpoint directory. Exit status 1 on a problem.",
    )
    p.add_argument("name", metavar="NAME_OR_DIR", help="zoo name or checkpoint directory")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file, not only problems")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "add",
        help="register a checkpoint directory in your registry",
        description="Hash every file of a checkpoint directory and write a registry entry "
        "into the user registry ($TINYGG_HOME/registry.yaml).",
    )
    p.add_argument("name", metavar="NAME", help="zoo name (`tinygg zoo list` shows them)")
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the checkpoint directory (safetensors + configs)",
    )
    p.add_argument(
        "--kind",
        choices=("checkpoint", "component"),
        default="checkpoint",
        help="a trained TinyGroundingGPT checkpoint (default) or a pretrained component",
    )
    p.add_argument("--preset", help="model preset (tiny, 1.5b, 3b, 7b); required for checkpoints")
    p.add_argument(
        "--stage", choices=STAGES, help="training stage that produced it; required for checkpoints"
    )
    p.add_argument("--parent", help="zoo name of the checkpoint it was trained from")
    p.add_argument("--description", help="one paragraph for `zoo info` and the model card")
    p.add_argument("--license", help="license identifier (e.g. apache-2.0)")
    p.add_argument(
        "--eval", nargs="+", type=Path, metavar="JSON", help="eval JSON files to record as metrics"
    )
    p.add_argument("--url", help="base URL the files will be served from (default: this directory)")
    p.add_argument("--repo-id", help="Hugging Face repo the files are published to (with --revision)")
    p.add_argument("--revision", help="commit hash of --repo-id")
    p.add_argument("--registry", type=Path, help="write to this registry file instead of the user registry")
    p.add_argument("--overwrite", action="store_true", help="replace an entry of the same name")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser(
        "card",
        help="write a model card (README.md) from eval results",
        description="Render a model card: REC in the paper's Table 1 layout, POPE (Table 3), "
        "DiG F1/IoU; from --eval JSON files, else from the registry's metrics.",
    )
    p.add_argument("name", metavar="NAME_OR_DIR", help="zoo name or checkpoint directory")
    p.add_argument("--eval", nargs="+", type=Path, metavar="JSON", help="eval JSON files (REC, POPE, DiG)")
    p.add_argument("--out", type=Path, help="write here instead of printing")
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser(
        "publish",
        help="push a checkpoint and its card to the Hugging Face Hub",
        description="Upload safetensors, configs, tokenizer files and a model card. Needs "
        "HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("name", metavar="NAME_OR_DIR", help="zoo name or checkpoint directory")
    p.add_argument("--repo-id", required=True, help="target repository, owner/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--eval", nargs="+", type=Path, metavar="JSON", help="eval JSON files for the card")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser(
        "convert",
        help="convert pickle weights in a directory to safetensors",
        description="Convert *.bin/*.pt/*.pth/*.ckpt weights to model.safetensors with "
        "torch.load(weights_only=True), which refuses anything but tensors.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="directory holding the pickle weight file(s)")
    p.set_defaults(func=_cmd_convert)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry, ``python -m model_zoo.cli zoo ...`` (the same commands as ``tinygg zoo ...``)."""
    parser = argparse.ArgumentParser(prog="tinygg")
    zoo = parser.add_subparsers(dest="command", required=True).add_parser(
        "zoo", help="the model zoo", description=ZOO_DESCRIPTION
    )
    register(zoo.add_subparsers(dest="zoo_command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
