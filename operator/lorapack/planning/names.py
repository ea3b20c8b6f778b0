"""Which object names can carry what lorapack derives from them: the naming rules' one home.

A LoraAdapter's name becomes a Service name (a DNS-1035 label: at most 63 characters, lowercase
letters, digits and '-', starting with a letter); a BaseModelPool's name becomes its
StatefulSet, the `<pool>` and `<pool>-pods` Services, `<pool>-agent` and the pods `<pool>-<k>`,
whose `controller-revision-hash` label `<pool>-<10 characters>` must fit 63 characters.
The API models put these rules into the CRDs as CEL on `metadata.name` (the API server refuses a
bad name at apply time, GitOps sees the refusal); the reconcilers check them again for objects
created before the rule existed, and refuse them in status instead of failing every pass.
"""

from __future__ import annotations

import re
from typing import Final

from lorapack.api import conditions as c
from lorapack.issues import Issue
from lorapack.labels import ADAPTER_NAME_MAX, POOL_NAME_MAX

__all__ = [
    "ADAPTER_NAME_MAX",
    "DNS1035_PATTERN",
    "POOL_NAME_MAX",
    "adapter_name_issue",
    "pool_name_issue",
]

DNS1035_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

_DNS1035 = re.compile(DNS1035_PATTERN)


def _issue(kind: str, name: str, limit: int, becomes: str) -> Issue | None:
    problems = []
    if len(name) > limit:
        problems.append(f"is {len(name)} characters long (at most {limit})")
    if not _DNS1035.match(name):
        problems.append(
            "must consist of lowercase letters, digits and '-', start with a letter and end "
            "with a letter or digit"
        )
    if not problems:
        return None
    return Issue(
        c.INVALID_NAME,
        f"{kind} name {name!r} {' and '.join(problems)}: it becomes {becomes}; recreate the "
        f"{kind} under a name like {_suggest(name, limit)!r}",
    )


def _suggest(name: str, limit: int) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text or not text[0].isalpha():
        text = f"x-{text}"
    return text[:limit].rstrip("-") or "x"


def adapter_name_issue(name: str) -> Issue | None:
    """Why a LoraAdapter cannot be named `name` (its Service takes the name), or None."""
    return _issue("LoraAdapter", name, ADAPTER_NAME_MAX, "the name of its Service")


def pool_name_issue(name: str) -> Issue | None:
    """Why a BaseModelPool cannot be named `name`, or None."""
    return _issue("BaseModelPool", name, POOL_NAME_MAX, "its StatefulSet, pods and Services' names")
