"""Building blocks of the stack model: the base model, rule collection, shared validators."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from model.naming import is_dns_label, is_email, is_label_key, is_label_value

# --------------------------------------------------------------------------- rule helpers


class Rules:
    """Collects broken rules of one object; ``raise_if_any`` reports them all at once.

    Each entry is (key path relative to the object, the value, what to write instead).
    """

    def __init__(self) -> None:
        self.problems: list[tuple[str, Any, str]] = []

    def add(self, at: str, value: Any, fix: str) -> None:
        self.problems.append((at, value, fix))

    def check_sizes(self, low: int, desired: int, high: int) -> None:
        """A node group's minSize <= desiredSize <= maxSize. Only a desiredSize the user
        wrote can be out of range (the default is computed within it), so it is blamed last."""
        if low > high:
            self.add("maxSize", high, f"use at least minSize ({low})")
        elif not low <= desired <= high:
            self.add(
                "desiredSize", desired, f"use a value from minSize ({low}) to maxSize ({high})"
            )

    def raise_if_any(self) -> None:
        if self.problems:
            raise PydanticCustomError(
                "rules_broken",
                "{count} rules broken",
                {"count": len(self.problems), "problems": self.problems},
            )


def with_rules(error: ValidationError, rules: Rules, data: Any) -> ValidationError:
    """``error`` and the broken ``rules`` as one error, so every problem is reported at once."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(item["type"], item["msg"], item.get("ctx")),
            loc=item["loc"],
            input=item["input"],
        )
        for item in error.errors(include_url=False)
    ]
    count = len(rules.problems)
    details.append(
        InitErrorDetails(
            type=PydanticCustomError(
                "rules_broken", "{count} rules broken", {"count": count, "problems": rules.problems}
            ),
            loc=(),
            input=data,
        )
    )
    return ValidationError.from_exception_data(error.title, details)


def custom(kind: str, fix: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{fix}", {"fix": fix})


def no_float(what: str, example: str) -> Any:
    """YAML reads 1.30 as the number 1.3: refuse numbers where a version string belongs."""

    def check(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise custom(
                "quote_number",
                f'write it in quotes, e.g. {what}: "{example}"; YAML reads an unquoted {value} '
                "as a number (and 1.30 as 1.3)",
            )
        return value

    return BeforeValidator(check)


def dns_label(max_length: int, example: str) -> Any:
    def check(value: str) -> str:
        if not is_dns_label(value, max_length):
            suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:max_length]
            if not is_dns_label(suggestion, max_length):
                suggestion = example
            raise custom(
                "dns_label",
                f"use a DNS label such as {suggestion!r}: lowercase letters, digits and '-', "
                f"starting and ending with a letter or digit, at most {max_length} characters",
            )
        return value

    return AfterValidator(check)


def email(example: str) -> Any:
    def check(value: str) -> str:
        if not is_email(value):
            raise custom("email", f"use an email address such as {example!r}")
        return value

    return AfterValidator(check)


def label_key(value: str) -> str:
    if not is_label_key(value):
        raise custom(
            "label_key",
            "use a Kubernetes key: an optional DNS prefix and '/', then up to 63 characters "
            "[A-Za-z0-9-_.] starting and ending with a letter or digit (e.g. 'gpu-shape')",
        )
    return value


def label_value(value: str) -> str:
    if not is_label_value(value):
        raise custom(
            "label_value",
            "use up to 63 characters [A-Za-z0-9-_.] starting and ending with a letter or digit "
            '(quote values YAML would read otherwise, e.g. "true")',
        )
    return value


def cidr_v4(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise custom(
            "cidr", "use an IPv4 CIDR block with its host bits zero, such as 203.0.113.0/24"
        ) from None
    if network.version != 4:
        raise custom("cidr", "use an IPv4 CIDR block; EKS endpoint access lists only IPv4")
    return value


def unique(items: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise custom("unique", f"list each entry once; repeated: {', '.join(repeated)}")
    return items


DnsName = Annotated[str, dns_label(63, "team-ml")]
LabelKey = Annotated[str, AfterValidator(label_key)]
LabelValue = Annotated[str, AfterValidator(label_value)]
Labels = Mapping[LabelKey, LabelValue]
CidrV4 = Annotated[str, AfterValidator(cidr_v4)]
UniqueStrings = Annotated[tuple[str, ...], AfterValidator(unique)]


def section() -> Any:
    """A sub-object that may be left out: its defaults are validated like written values."""
    return Field(default_factory=dict, validate_default=True)


class Model(BaseModel):
    """Frozen, camelCase keys in stack files, unknown keys refused.

    Python code may build a model by field name (``instance_types=...``); a stack file is
    validated by alias only (``stack.load`` passes ``by_name=False``), so its one spelling
    of a key is the camelCase one.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        str_strip_whitespace=False,
    )


class Missing:
    """Shown as "(missing)" where a required value was not given."""

    def __repr__(self) -> str:
        return "(missing)"


MISSING: Any = Missing()


def matches(regex: str, example: str) -> Any:
    """A validator: the value must match ``regex``; the error shows ``example``."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise custom("pattern", f"use the form {example}")
        return value

    return AfterValidator(check)
