"""Accuracy of the letter in the last 'the answer is (X)'; a reply without one is wrong.

A local evaluate module (the evaluate package ships no metric scripts offline):

    evaluate.load("task_metrics/multiple_choice").compute(predictions=..., references=..., contexts=...)
"""

from stages import metric_module


class MultipleChoice(metric_module.TaskMetricModule):  # the base not imported by name: evaluate takes the first Metric it sees
    """Accuracy of the letter in the last 'the answer is (X)'; a reply without one is wrong."""

    metric_name = "multiple_choice"
