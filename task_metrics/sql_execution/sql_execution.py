"""Execution accuracy of SQL replies on each record's SQLite tables (plus exact match and error rate).

A local evaluate module (the evaluate package ships no metric scripts offline):

    evaluate.load("task_metrics/sql_execution").compute(predictions=..., references=..., contexts=...)
"""

from stages import metric_module


class SqlExecution(metric_module.TaskMetricModule):  # the base not imported by name: evaluate takes the first Metric it sees
    """Execution accuracy of SQL replies on each record's SQLite tables (plus exact match and error rate)."""

    metric_name = "sql_execution"
