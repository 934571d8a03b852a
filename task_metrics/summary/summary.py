"""ROUGE-1/2/L F1 (Unicode words) and chrF (0-1) of a summary against the gold text.

A local evaluate module (the evaluate package ships no metric scripts offline):

    evaluate.load("task_metrics/summary").compute(predictions=..., references=..., contexts=...)
"""

from stages import metric_module


class Summary(metric_module.TaskMetricModule):  # the base not imported by name: evaluate takes the first Metric it sees
    """ROUGE-1/2/L F1 (Unicode words) and chrF (0-1) of a summary against the gold text."""

    metric_name = "summary"
