"""The shape every local `evaluate` module in task_metrics/ shares: inputs, description, and the
scoring itself delegated to stages/scoring.py (shared with select and compare)."""

import datasets
import evaluate

from stages import scoring


class TaskMetricModule(evaluate.Metric):
    """Subclasses name their task metric: `metric_name = "sql_execution"`."""

    metric_name = ""

    def _info(self):
        return evaluate.MetricInfo(
            description=self.__doc__ or self.metric_name,
            citation="",
            inputs_description="predictions: model replies; references: gold completions; contexts: dicts of "
                               "the record fields named in task.yaml (references:)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, contexts=None):
        per_record = scoring.score_all(self.metric_name, predictions, references,
                                       contexts or [{}] * len(predictions))
        return {**scoring.aggregate(per_record), "per_record": per_record}
