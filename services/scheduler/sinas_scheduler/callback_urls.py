"""The submit-time callback check: the shared policy, then the address rule on every address
the host resolves to now (delivery checks both again)."""

from __future__ import annotations

from sinas_common.callback_policy import CallbackPolicy, Resolver


class PolicyCallbackUrlCheck:
    """Applies CALLBACK_URL_HOSTS/PORTS and the SSRF address rule through `resolver`."""

    def __init__(self, policy: CallbackPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver

    async def check(self, url: str) -> str:
        target = self._policy.check_url(url)
        await self._policy.resolve(target, self._resolver)
        return target.url
