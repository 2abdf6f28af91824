"""The original Scanflow design's callee: a JSON endpoint on FastAPI (served by ``_peers http``).

A module of its own, at top level: FastAPI resolves the body model from the
function's module globals, which a class defined inside a function is not.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel


class ScaleRequest(BaseModel):
    replicas: int
    service: str = "digits"


app = FastAPI()


@app.post("/scale")
async def scale(request: ScaleRequest) -> dict[str, object]:
    return {"service": request.service, "replicas": request.replicas}
