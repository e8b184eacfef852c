"""The best-selling order: a periodic pass copies each product's sold count into its rank.

A sale changes `sold_count` in the same products row that checkout locks. If the
best-selling index covered that column, every sale would add an entry to every
index of the table; it covers `ranked_sold_count` instead, which this pass brings
up to date in batches, so the order lags the sales by at most one pass.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.models import Product
from services.jobs.registry import registry

logger = logging.getLogger(__name__)

RANK_EVERY = timedelta(minutes=1)
RANK_BATCH = 5_000


async def rank_best_selling(session: AsyncSession, *, batch: int = RANK_BATCH) -> int:
    """Copy `sold_count` into `ranked_sold_count` where they differ; return how many rows.

    At most `batch` rows per call. Rows that a checkout or a sale holds locked are
    skipped, not waited for, so the pass never delays an order and two passes at
    once share the work; a skipped row is ranked by the next pass.
    """
    stale = (
        select(Product.id)
        .where(Product.ranked_sold_count != Product.sold_count)
        .order_by(Product.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    ranked = await session.execute(
        update(Product)
        .where(Product.id.in_(stale))
        .values(ranked_sold_count=Product.sold_count)
        .returning(Product.id)
        .execution_options(synchronize_session=False)
    )
    return len(ranked.all())


@registry.periodic("catalog.rank_best_selling", every=RANK_EVERY)
async def rank_best_selling_task(session: AsyncSession) -> None:
    ranked = await rank_best_selling(session)
    if ranked:
        logger.info("best-selling ranks refreshed", extra={"products": ranked})
