"""Imports every area's models so that one metadata describes the whole schema."""

from services.assessment import models as assessment_models
from services.audit import models as audit_models
from services.catalog import models as catalog_models
from services.cooperatives import models as cooperatives_models
from services.db import Base
from services.exports import models as exports_models
from services.households import models as households_models
from services.idempotency import models as idempotency_models
from services.jobs import models as jobs_models
from services.ledger import models as ledger_models
from services.orders import models as orders_models
from services.payments import models as payments_models
from services.regions import models as regions_models
from services.tracking import models as tracking_models
from services.users import models as users_models

metadata = Base.metadata

__all__ = [
    "assessment_models",
    "audit_models",
    "catalog_models",
    "cooperatives_models",
    "exports_models",
    "households_models",
    "idempotency_models",
    "jobs_models",
    "ledger_models",
    "metadata",
    "orders_models",
    "payments_models",
    "regions_models",
    "tracking_models",
    "users_models",
]
