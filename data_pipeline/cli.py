"""``tinygg data pipeline``: the multi-scale fine-grained data synthesis pipeline from the command line.

    export TINYGG_VLM_BASE_URL=https://api.openai.com/v1 TINYGG_VLM_MODEL=gpt-4o OPENAI_API_KEY=...
    tinygg data pipeline --images photos/ --out synth/ --concurrency 8
    # or standalone: python -m data_pipeline.cli pipeline --images photos/ --out synth/

The lead's ``tinygg/cli.py`` calls :func:`register` with the sub-parsers of ``tinygg data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_pipeline.filters import FilterSettings
from data_pipeline.grounding import DEFAULT_GROUNDING_MODEL
from data_pipeline.images import Shard
from data_pipeline.pipeline import PipelineOptions, parse_stages, run_pipeline
from data_pipeline.stage import STAGES
from data_pipeline.usage import Prices
from data_pipeline.vlm_client import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    ENV_PRICE_INPUT,
    ENV_PRICE_OUTPUT,
    VLMConfigurationError,
    VLMSettings,
)

logger = logging.getLogger(__name__)

_DESCRIPTION = f"""\
Synthesise grounding training data from a directory of images (TinyGroundingGPT, section 3.2):
recognise objects with a VLM, box them with GroundingDINO, extract relations, generate fine-grained
grounding QAs, multi-round grounding conversations and grounding descriptions, filter, and export
train.json in the training schema.

Each stage reads and writes JSONL in --out and skips images it has already done; every VLM answer is
saved as it arrives, so a killed run restarted with the same command pays for no request twice.

The VLM is any OpenAI-compatible chat endpoint: --base-url/${ENV_BASE_URL}, --model/${ENV_MODEL}; the
API key is read from ${ENV_API_KEY} (or the variable named by --api-key-env) and is never printed or
written. Prices for the cost log: --price-input/--price-output or ${ENV_PRICE_INPUT}/${ENV_PRICE_OUTPUT}.
"""


_FILTER_HELP = {  # FilterSettings field -> flag help; each becomes --field-name
    "min_object_area": "smallest object image, as a share of the image area",
    "max_object_area": "largest object image, as a share of the image area",
    "min_object_side": "shortest side of an object image in pixels",
    "max_option_iou": "largest IoU between two object images of one sample (e.g. answer options)",
    "min_score": "lowest grounding score of an object a sample uses",
    "max_instances": "most boxes one object name may have before it counts as ambiguous",
    "max_boxes": "most boxes (object images plus box texts) in one sample",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``pipeline`` to the sub-parsers of ``tinygg data``."""
    p = subparsers.add_parser(
        "pipeline",
        help="synthesise grounding data from images (VLM + GroundingDINO)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--images",
        required=True,
        metavar="DIR",
        help="directory of images (searched recursively); the image root of the exported data",
    )
    io.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (created; reused to resume)"
    )
    io.add_argument(
        "--stages",
        default=",".join(STAGES),
        metavar="LIST",
        help=f"comma-separated stages to run, in pipeline order (default: {','.join(STAGES)})",
    )
    io.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="process only shard I of N (every N-th image); outputs get a .shardIofN suffix",
    )
    io.add_argument(
        "--redo",
        action="store_true",
        help="discard the outputs of the selected stages and run them again (VLM answers still come from "
        "the cache for free: use it after changing filters, question templates or thresholds)",
    )
    io.add_argument(
        "--prompts",
        default=None,
        metavar="DIR",
        help="directory whose template files override the shipped data_pipeline/prompts/ ones",
    )
    io.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=0,
        help="seed for question wording and option order (default 0)",
    )

    vlm = p.add_argument_group("VLM endpoint (OpenAI-compatible)")
    vlm.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help=f"API base URL (default ${ENV_BASE_URL} or {DEFAULT_BASE_URL})",
    )
    vlm.add_argument(
        "--model", default=None, metavar="NAME", help=f"model name (default ${ENV_MODEL} or {DEFAULT_MODEL})"
    )
    vlm.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help=f"name of the environment variable holding the API key (default {ENV_API_KEY}); "
        "the key itself is never accepted on the command line",
    )
    vlm.add_argument(
        "--concurrency", type=int, metavar="N", default=None, help="requests in flight at once (default 4)"
    )
    vlm.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=None,
        dest="timeout_s",
        help="seconds before a request is abandoned and retried (default 120)",
    )
    vlm.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        default=None,
        help="retries on 429, 5xx, timeouts and connection errors (default 6)",
    )
    vlm.add_argument(
        "--backoff",
        type=float,
        metavar="S",
        default=None,
        dest="backoff_base_s",
        help="first back-off in seconds, doubled per retry, with jitter (default 1); a 429's "
        "Retry-After header takes precedence",
    )
    vlm.add_argument(
        "--temperature", type=float, metavar="X", default=None, help="sampling temperature (default 0.2)"
    )
    vlm.add_argument(
        "--max-tokens", type=int, metavar="N", default=None, help="answer length limit (default 2048)"
    )
    vlm.add_argument(
        "--max-image-side",
        type=int,
        metavar="N",
        default=None,
        help="images are downscaled to this longer side before sending (default 1024)",
    )
    vlm.add_argument(
        "--json-mode",
        action="store_true",
        default=None,
        help="send response_format json_object (OpenAI and most servers support it; answers are parsed "
        "and repaired either way)",
    )
    vlm.add_argument(
        "--price-input",
        type=float,
        default=None,
        metavar="USD",
        help=f"US dollars per 1M input tokens for the cost log (default ${ENV_PRICE_INPUT} or 0)",
    )
    vlm.add_argument(
        "--price-output",
        type=float,
        default=None,
        metavar="USD",
        help=f"US dollars per 1M output tokens (default ${ENV_PRICE_OUTPUT} or 0)",
    )

    g = p.add_argument_group("grounding and generation")
    g.add_argument(
        "--grounding-model",
        default=DEFAULT_GROUNDING_MODEL,
        metavar="ID_OR_DIR",
        help=f"GroundingDINO checkpoint: hub id or local directory (default {DEFAULT_GROUNDING_MODEL})",
    )
    g.add_argument(
        "--box-threshold", type=float, metavar="X", default=0.35, help="box confidence to keep (default 0.35)"
    )
    g.add_argument(
        "--text-threshold",
        type=float,
        metavar="X",
        default=0.25,
        help="mean token probability over the object's phrase to keep (default 0.25)",
    )
    g.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="torch device for GroundingDINO, e.g. cuda:0 (default cpu)",
    )
    g.add_argument(
        "--max-objects", type=int, metavar="N", default=20, help="objects asked for per image (default 20)"
    )
    g.add_argument(
        "--max-relations", type=int, metavar="N", default=20, help="relation triples per image (default 20)"
    )
    g.add_argument(
        "--max-questions", type=int, metavar="N", default=6, help="relation QAs per image (default 6)"
    )
    g.add_argument(
        "--conversation-rounds", type=int, metavar="N", default=4, help="rounds per conversation (default 4)"
    )

    defaults = FilterSettings()
    f = p.add_argument_group(
        "filters (the paper's section 3.2; try others with --stages filter,export --redo)"
    )
    for name, text in _FILTER_HELP.items():
        default = getattr(defaults, name)
        f.add_argument(
            "--" + name.replace("_", "-"),
            type=type(default),
            metavar="N" if isinstance(default, int) else "X",
            default=default,
            help=f"{text} (default {default:g})",
        )
    p.set_defaults(func=handle_pipeline)
    return p


def handle_pipeline(args: argparse.Namespace) -> int:
    try:
        stages = parse_stages(args.stages)
        prices = None
        if args.price_input is not None or args.price_output is not None:
            prices = Prices(args.price_input or 0.0, args.price_output or 0.0)
        settings = VLMSettings.from_env(
            base_url=args.base_url,
            model=args.model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            timeout_s=args.timeout_s,
            max_retries=args.max_retries,
            backoff_base_s=args.backoff_base_s,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            max_image_side=args.max_image_side,
            json_mode=args.json_mode,
            prices=prices,
        )
        options = PipelineOptions(
            grounding_model=args.grounding_model,
            box_threshold=args.box_threshold,
            text_threshold=args.text_threshold,
            device=args.device,
            max_objects=args.max_objects,
            max_relations=args.max_relations,
            max_questions=args.max_questions,
            conversation_rounds=args.conversation_rounds,
            prompts_dir=args.prompts,
            seed=args.seed,
            filters=FilterSettings(**{name: getattr(args, name) for name in _FILTER_HELP}),
        )
        shard = Shard.parse(args.shard)
    except ValueError as exc:
        print(f"tinygg data pipeline: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run_pipeline(
            args.images,
            args.out,
            stages=stages,
            redo=args.redo,
            shard=shard,
            vlm_settings=settings,
            options=options,
        )
    except (VLMConfigurationError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"tinygg data pipeline: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    if summary["pending_images"]:
        print(
            f"{summary['pending_images']} image(s) still pending after retries: run the same command again "
            "to finish them",
            file=sys.stderr,
        )
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m data_pipeline.cli pipeline ...``."""
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
