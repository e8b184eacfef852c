"""Imports every area's models so that one metadata describes the whole schema."""

from services.audit import models as audit_models
from services.catalog import models as catalog_models
from services.cooperatives import models as cooperatives_models
from services.db import Base
from services.households import models as households_models
from services.regions import models as regions_models
from services.users import models as users_models

metadata = Base.metadata

__all__ = [
    "audit_models",
    "catalog_models",
    "cooperatives_models",
    "households_models",
    "metadata",
    "regions_models",
    "users_models",
]
