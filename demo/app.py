"""The demo's tasks: `demo.resize` does a little CPU work and returns a result.

Started by `make demo` as `pgconductor worker start --app demo.app:conductor --queue demo`.
"""

import hashlib
import os

from pydantic import BaseModel

from pgconductor import Conductor, TaskContext

conductor = Conductor(os.environ["DATABASE_URL"])


class Image(BaseModel):
    """Payload of demo.resize: which image, and how big."""

    image: int
    width: int = 640


@conductor.task("demo.resize", queue="demo", max_attempts=3, timeout=10, payload=Image)
async def resize(ctx: TaskContext, payload: Image) -> dict[str, object]:
    """Pretend to resize an image: hash its number (stands in for real work)."""
    digest = hashlib.blake2b(f"{payload.image}:{payload.width}".encode(), digest_size=8).hexdigest()
    return {"image": payload.image, "thumb": digest}
