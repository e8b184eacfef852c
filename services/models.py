"""Imports every area's models so that one metadata describes the whole schema."""

from services.db import Base
from services.users import models as users_models

metadata = Base.metadata

__all__ = ["metadata", "users_models"]
