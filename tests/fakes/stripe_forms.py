"""Reading Stripe's form-encoded parameters, and the error answers Stripe gives for them."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_AMOUNT = 99_999_999  # Stripe's ceiling in minor units for two-decimal currencies


class StripeFailure(Exception):
    """An error answer in Stripe's envelope.

    `stored` says whether Stripe would keep it under the idempotency key: it does
    once the endpoint started executing, not for a request that failed validation.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.stored = stored
        error: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            error["param"] = param
        error.update(extra or {})
        self.body: dict[str, Any] = {"error": error}


def parse_form(text: str) -> dict[str, Any]:
    """`a=1&metadata[k]=v&expand[0]=x` -> {"a": "1", "metadata": {"k": "v"}, "expand": ["x"]}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise StripeFailure(400, f"Invalid parameter name: {key}", code="parameter_unknown")
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part or str(len(node)), {})
            if not isinstance(child, dict):
                raise StripeFailure(400, f"Invalid hash: {key}", param=key)
            node = child
        last = parts[-1] or str(len(node))
        if isinstance(node.get(last), dict):
            raise StripeFailure(400, f"Invalid hash: {key}", param=key)
        node[last] = value
    result: dict[str, Any] = _listify(root)
    return result


def _listify(node: Any) -> Any:
    # Stripe sends arrays as a[0]=..&a[1]=..; a hash whose keys are all indexes is one.
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def check_known(params: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise StripeFailure(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


def required(params: dict[str, Any], name: str) -> Any:
    if name not in params or params[name] == "":
        raise StripeFailure(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]


def integer(params: dict[str, Any], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
        raise StripeFailure(
            400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name
        )
    return int(raw)


def amount(params: dict[str, Any], name: str = "amount") -> int | None:
    value = integer(params, name)
    if value is not None and value < 1:
        raise StripeFailure(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=name,
        )
    if value is not None and value > MAX_AMOUNT:
        raise StripeFailure(
            400,
            f"Amount must be no more than {MAX_AMOUNT}",
            code="amount_too_large",
            param=name,
        )
    return value


def boolean(params: dict[str, Any], name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise StripeFailure(
            400, f"Invalid boolean: {raw}", code="parameter_invalid_boolean", param=name
        )
    return bool(raw == "true")


def string(params: dict[str, Any], name: str, choices: frozenset[str] | None = None) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise StripeFailure(400, f"Invalid string: {raw}", param=name)
    if choices is not None and raw not in choices:
        raise StripeFailure(400, f"Invalid {name}: must be one of {sorted(choices)}", param=name)
    return raw


def metadata(params: dict[str, Any]) -> dict[str, str]:
    """Stripe's metadata rules: at most 50 keys, keys up to 40 and values up to 500 characters."""
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeFailure(400, "Invalid hash", param="metadata")
    if len(raw) > 50:
        raise StripeFailure(400, "Metadata can have at most 50 keys.", param="metadata")
    result: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str) or len(key) > 40 or len(value) > 500:
            raise StripeFailure(
                400,
                "Metadata keys are limited to 40 characters and values to 500 characters.",
                param=f"metadata[{key}]",
            )
        if value != "":  # an empty value unsets the key
            result[key] = value
    return result


def currency(params: dict[str, Any]) -> str:
    raw = required(params, "currency")
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z]{3}", raw):
        raise StripeFailure(400, f"Invalid currency: {raw}.", param="currency")
    return raw.lower()
