"""RFC 9457 problem details, as every error of the API is sent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `lines.0.quantity`.")
    location: str = Field(description="Where the field was sent: body, query, path or header.")
    message: str
    type: str = Field(description="Machine-readable kind of error.")


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable URI reference naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    field: str | None = Field(default=None, description="The offending field, when there is one.")
    errors: list[FieldError] | None = None


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for error answers, all shaped as Problem."""
    return {status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses}
