"""Parameter-name translation tables shared by the importers: templates with fields, compiled once.

A template such as ``encoder.layers.{i}.fc1.{p}`` matches a layer index ``{i}``, ``{p}`` weight/bias and
``{m}`` an attention projection; a match is rewritten with the other side's template.
"""
from __future__ import annotations

import re

_FIELDS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "m": r"(?P<m>q_proj|k_proj|v_proj|out_proj)"}


def compile_names(pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    """(source template, target template) pairs -> (compiled source pattern, target template)."""
    table = []
    for source, target in pairs:
        pattern = re.escape(source)
        for field, group in _FIELDS.items():
            pattern = pattern.replace(re.escape("{" + field + "}"), group)
        table.append((re.compile(pattern), target))
    return table


def rename(name: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    """The target name of ``name``, or None when no template matches."""
    for pattern, template in table:
        match = pattern.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None
