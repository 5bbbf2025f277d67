"""A FastAPI/Starlette dependency that verifies a Sinas callback and returns its payload.

Needs Starlette (installed with FastAPI, or ``pip install 'sinas[fastapi]'``)::

    verified = WebhookVerifier(os.environ["SINAS_WEBHOOK_SECRET"])

    @app.post("/callbacks")
    async def callback(payload: Annotated[dict[str, Any], Depends(verified)]) -> None: ...

FastAPI resolves annotations in the module's globals, so create the verifier at module level
(or reach it through ``request.app.state`` from a module-level dependency).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from sinas.exceptions import WebhookVerificationError
from sinas.webhooks import DEFAULT_TOLERANCE_SECONDS, signing_key, verify


class WebhookVerifier:
    """Verifies the request's signature over its raw body; answers 401 when it is not authentic.

    Args:
        secret: the instance's ``whsec_...`` signing secret.
        tolerance: seconds the callback's timestamp may differ from now.
    """

    def __init__(self, secret: str | bytes, *, tolerance: float = DEFAULT_TOLERANCE_SECONDS):
        # Fail at start on a malformed secret, not on the first callback.
        self._key = signing_key(secret)
        self._tolerance = tolerance

    async def __call__(self, request: Request) -> Any:
        body = await request.body()
        try:
            return verify(request.headers, body, self._key, tolerance=self._tolerance)
        except WebhookVerificationError as exc:
            raise HTTPException(status_code=401, detail=str(exc)) from exc
