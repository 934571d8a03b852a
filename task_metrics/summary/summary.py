"""ROUGE-1/2/L F1 (Unicode words) and chrF (0-1) of a summary against the gold text.

A local evaluate module (the evaluate package ships no metric scripts offline):

    evaluate.load("task_metrics/summary").compute(predictions=..., references=..., contexts=...)

`contexts` holds each record's extra fields named in task.yaml (`references:`). The scoring
itself is stages/scoring.py, shared with the pipeline's stages.
"""

import datasets
import evaluate

from stages import scoring


class Summary(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: model replies; references: gold completions; contexts: dicts",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, contexts=None):
        per_record = scoring.score_all("summary", predictions, references, contexts or [{}] * len(predictions))
        return {**scoring.aggregate(per_record), "per_record": per_record}
