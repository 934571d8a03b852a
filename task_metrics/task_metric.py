"""Every task metric of sft/metrics.py as a local `evaluate` module (the evaluate package ships no
metric scripts offline). task_metrics/<name>/<name>.py is a link to this file; evaluate copies it
under the metric's name, which is how it knows which metric it is:

    evaluate.load("task_metrics/sql_execution").compute(predictions=..., references=..., contexts=...)
"""

import datasets
import evaluate

from sft import metrics

NAME = __name__.rsplit(".", 1)[-1]  # evaluate imports the copy as <...>.<name>.<hash>.<name>


class LocalTaskMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=metrics.metric_named(NAME).description,
            citation="",
            inputs_description="predictions: model replies; references: gold completions; contexts: dicts of "
                               "the record fields named in task.yaml (references:); settings: the metric's "
                               "own task.yaml keys (answer:, fields:)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, contexts=None, settings=None):
        per_record = metrics.score_all(NAME, predictions, references, contexts or [{}] * len(predictions),
                                       settings)
        return {**metrics.aggregate(per_record), "per_record": per_record}
