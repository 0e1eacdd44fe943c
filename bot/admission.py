"""Whether a member's quota and cooldown, and their guild's budget, admit one more job.

Reads what ``bot.quotas`` needs from the store and asks it, inside ``Store.transaction()``:
called from the queue's own transaction it joins it, so the answer holds until the job is written.
"""

from __future__ import annotations

from bot import quotas
from bot.quotas import Admission
from bot.store import Store


async def refusal(
    store: Store, guild_id: int, user_id: int, backend: str, admission: Admission
) -> quotas.Refusal | None:
    """Why a job with ``admission`` would be refused now (quota, cooldown, budget); None to accept it."""
    async with store.transaction():
        usage = await store.charges.member_usage(guild_id, user_id, admission.windows)
        found = quotas.check(
            admission.limits,
            usage,
            admission.cost,
            now=admission.now,
            windows=admission.windows,
            last_request_at=await store.jobs.last_request_at(guild_id, user_id),
            cooldown_s=admission.cooldown_s,
        )
        if found is not None:
            return found
        images, spend = await store.charges.guild_spent(guild_id, admission.windows.month)
    return quotas.check_budget(
        admission.budget,
        images,
        spend,
        admission.images,
        admission.usd,
        windows=admission.windows,
        backend=backend,
    )
