"""Helpers shared by integration modules."""

from __future__ import annotations

from typing import Any

from pgconductor import Conductor


async def finished(conductor: Conductor, execution_id: Any) -> Any:
    """The execution's info once it has ended (None while pending or running)."""
    info = await conductor.client.get_execution(execution_id)
    return info if info is not None and info.state not in ("pending", "running") else None
