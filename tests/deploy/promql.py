"""Metric names used by PromQL expressions (dashboard panels, alert rules) and exported by
a `/metrics` page, so the two can be compared."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*?)(?:,\s*[A-Za-z_]\w*)?\)\s*$")


def metric_names(expr: str) -> set[str]:
    """Every metric name in a PromQL expression (or a Grafana `label_values(...)` query).

    Strings, label matchers `{...}`, ranges `[...]` and grouping clauses `by (...)`,
    `on (...)`, ... are removed first; then an identifier followed by `(` is a function
    or an aggregation, a keyword is a keyword, `$name` is a Grafana variable, and every
    other identifier is a metric name.
    """
    match = _LABEL_VALUES.match(expr)
    if match:
        expr = match.group(1)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for found in re.finditer(r"(?<![\w$.])[A-Za-z_:][\w:]*", text):
        word = found.group()
        if text[found.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a `/metrics` page can hold: its samples' names, plus the names a
    family declares by its type (a gauge whose value is unknown yet has no sample)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names
