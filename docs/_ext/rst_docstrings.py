"""A griffe extension: read aioconnpool's reST-flavoured docstrings as Markdown.

The package's docstrings use two reST habits that Markdown renders badly:
roles (``:class:`PoolFullError```) and definition lists (a term line, then
its description indented below). This turns roles into code spans and each
definition list entry into a Markdown list item, at build time only: the
docstrings themselves are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`~?([^`]+)`")
TERM = re.compile(r"^``[^`]+``(?: / ``[^`]+``)*$")


def markdown(text: str) -> str:
    text = ROLE.sub(r"`\1`", text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if TERM.match(line) and following.startswith("    "):
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].startswith("    "):
                body.append(lines[i].strip())
                i += 1
            out.append(f"- {line}: {' '.join(body)}")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
