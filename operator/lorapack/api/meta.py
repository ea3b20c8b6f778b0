"""Shapes shared by both custom resources: the camelCase base model, conditions, references.

Every API model derives from `ApiModel`: camelCase on the wire, attribute docstrings become CRD
descriptions (through `api.crdgen`), unknown fields are refused so `lorapack plan` catches typos
that the API server would silently prune.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

__all__ = [
    "QUANTITY_PATTERN",
    "S3_URI_PATTERN",
    "S3_URI_RULES",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "CrdInfo",
    "LocalObjectReference",
    "ObjectMeta",
    "PrinterColumn",
    "Quantity",
    "S3Uri",
    "Toleration",
    "format_validation_error",
    "name_rule",
    "parse_quantity",
    "parse_s3_uri",
    "wire_default",
]

# Kubernetes resource.Quantity, the subset people write: 20Gi, 500M, 1.5Gi, 1024.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
# s3://bucket[/prefix]: bucket names per the S3 naming rules (3-63 lowercase, digits, dots, dashes).
# One path segment: not empty, not "." or ".." (S3 keeps them literally, but tools that map keys to
# files resolve them, so `s3://bucket/../other-team/` could name another prefix), no control
# characters. Written without look-ahead: the API server checks CRD patterns with RE2.
_SEGMENT = r"(?:[^/.\x00-\x1f][^/\x00-\x1f]*|\.[^/.\x00-\x1f][^/\x00-\x1f]*|\.\.[^/\x00-\x1f]+)"
S3_URI_PATTERN = rf"^s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](?:/(?:{_SEGMENT}/)*(?:{_SEGMENT})?)?$"
# The same rule as a CEL message, so `kubectl apply` says what to change rather than print
# the pattern.
S3_URI_RULES: Final = [
    {
        "rule": "!self.matches('/[.][.]?(/|$)') && !self.matches('^s3://[^/]+/(.*/)?/')",
        "message": "path segments must not be empty, '.' or '..': name the folder itself, "
        "like s3://bucket/team/adapter/",
    }
]
# An S3 folder URI field, as every spec names one.
S3Uri = Annotated[
    str,
    Field(
        pattern=S3_URI_PATTERN,
        max_length=1024,
        json_schema_extra={"x-kubernetes-validations": S3_URI_RULES},
    ),
]
# A Secret (or other object) name: a DNS-1123 subdomain, as the API server requires of names.
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]


def parse_quantity(value: str) -> int:
    """Bytes (or units) of a Quantity string such as "20Gi"; rounds fractions down."""
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a quantity like 20Gi, 500M or 1024")
    suffix = match.group(2) or ""
    number = value[: len(value) - len(suffix)]
    whole, _, frac = number.partition(".")
    scale = _SUFFIX[suffix]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: the field path in camelCase, then what is wrong."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"] if p != "__root__")
        where = f"{prefix}{path}" if path else prefix.rstrip(".") or "object"
        lines.append(f"{where}: {item['msg']}")
    return "\n".join(lines)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of "s3://bucket/prefix/"; the prefix ends with "/" unless empty."""
    if not re.match(S3_URI_PATTERN, uri):
        raise ValueError(
            f"{uri!r} is not an S3 URI like s3://bucket/path/to/adapter/ (a lowercase bucket; path "
            "segments neither empty nor '.' or '..')"
        )
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class ApiModel(BaseModel):
    """Base of every wire model: camelCase aliases, docstrings as descriptions, no extras."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def wire_default(model: type[ApiModel]) -> dict[str, Any]:
    """`json_schema_extra` giving an object field the complete wire form of its default.

    The API server validates a default with the CEL rules of its schema but does not apply
    the nested defaults first, so `default: {}` fails a rule like `self.min <= self.max`.
    """
    return {"default": model().wire()}


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Condition type: Ready, Reconciling or Stalled (kstatus)."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    """Machine-readable PascalCase reason."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable explanation, saying what to change when something is wrong."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the condition was computed from."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN)]
    """Name of the referenced object (lowercase letters, digits, '-' and '.', as object names)."""


class Toleration(ApiModel):
    """A pod toleration, as in core/v1 Toleration."""

    key: str | None = None
    """Taint key the toleration applies to; empty matches all keys (with operator Exists)."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (default Equal)."""
    value: str | None = None
    """Taint value to match when operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class ObjectMeta(BaseModel):
    """The subset of metadata lorapack reads; everything else is kept as-is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None
    creation_timestamp: str | None = None


class PrinterColumn(BaseModel):
    """An additionalPrinterColumns entry."""

    name: str
    type: Literal["string", "integer", "date", "number", "boolean"]
    json_path: str
    description: str = ""
    priority: int = 0


class CrdInfo(BaseModel):
    """Per-kind CRD metadata kept next to the model (like kubebuilder markers)."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    categories: list[str]
    printer_columns: list[PrinterColumn]
    validations: list[dict[str, str]] = []
    """Root-level CEL rules ({"rule", "message"}), e.g. on metadata.name."""


def name_rule(limit: int, becomes: str) -> list[dict[str, str]]:
    """CEL rules refusing `metadata.name`s that cannot become the objects named after it."""
    return [
        {
            "rule": f"size(self.metadata.name) <= {limit}",
            "message": f"metadata.name must be at most {limit} characters: it becomes {becomes}",
        },
        {
            "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must consist of lowercase letters, digits and '-', start "
            f"with a letter and end with a letter or digit: it becomes {becomes}",
        },
    ]
