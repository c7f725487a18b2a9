"""Evaluation of TinyGroundingGPT: REC Acc@0.5 (the paper's Table 1) and POPE (Table 3).

* :mod:`.sources` -- readers for refer API files, lmms-lab parquet, Shikra JSONL and POPE questions.
* :mod:`.rec` -- REC scoring (one parser, one metric) for model runs and for existing predictions.
* :mod:`.pope` -- POPE yes/no parsing and metrics.
* :mod:`.runner` / :mod:`.journal` -- resumable batched generation and its ``predictions.jsonl``.
* :mod:`.report` -- the printed tables; :mod:`.cli` -- ``tinygg eval rec | pope``.
"""

from .pope import binary_metrics, evaluate_pope, parse_yes_no
from .rec import evaluate_rec, score_answer, score_existing, summarise
from .sources import BadRow, PopeQuestion, RecSample, load_rec_data, read_pope

__all__ = [
           "BadRow",
           "PopeQuestion",
           "RecSample",
           "binary_metrics",
           "evaluate_pope",
           "evaluate_rec",
           "load_rec_data",
           "parse_yes_no",
           "read_pope",
           "score_answer",
           "score_existing",
           "summarise",
]
