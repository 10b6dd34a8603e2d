"""Serves `kube2redis resync` requests (common/resync.py): each request that
matches scopes of this watcher makes their reflectors relist, and is answered."""

import logging
from collections.abc import Sequence

import redis

from common import resync
from common.keys import Keys
from watcher.reflector import Reflector

log = logging.getLogger(__name__)


class ResyncListener:
    """Polled by the watcher's main thread; answers from the reflectors' threads."""

    def __init__(
        self, r: "redis.Redis", keys: Keys, reflectors: Sequence[Reflector], watcher_id: str
    ) -> None:
        self._r, self._keys, self._reflectors = r, keys, reflectors
        self._watcher_id = watcher_id
        # Request ids are Redis's clock, not ours: start from its time.
        try:
            seconds, micros = r.time()
            self._cursor = resync.start_cursor(seconds + micros / 1e6)
        except redis.RedisError:
            self._cursor = resync.start_cursor()

    def poll(self) -> int:
        """Act on the requests made since the last poll; how many scopes relist."""
        try:
            self._cursor, requests = resync.read_requests(self._r, self._keys, self._cursor)
        except redis.RedisError:
            return 0  # the writer reports Redis's state; requests wait for it
        started = 0
        for request_id, wanted in requests:
            for reflector in self._reflectors:
                if wanted.matches(reflector.resource, reflector.namespace):
                    self._serve(request_id, wanted, reflector)
                    started += 1
        return started

    def _serve(self, request_id: str, wanted: resync.ResyncRequest, reflector: Reflector) -> None:
        log.info(
            "resync requested (%s): relisting",
            wanted.reason,
            extra={"scope": reflector.scope, "request": request_id},
        )
        self._answer(request_id, reflector, "relisting")

        def listed(list_rv: str, objects: int) -> None:
            self._answer(request_id, reflector, "listed", list_rv, objects)

        reflector.request_relist(wanted.reason, on_relisted=listed)

    def _answer(
        self,
        request_id: str,
        reflector: Reflector,
        state: resync.AnswerState,
        list_rv: str = "",
        objects: int = 0,
    ) -> None:
        reply = resync.ResyncAnswer(
            scope=reflector.scope,
            kind=reflector.resource.key_kind,
            namespace=reflector.namespace,
            watcher=self._watcher_id,
            state=state,
            list_rv=list_rv,
            objects=objects,
        )
        try:
            resync.answer(self._r, self._keys, request_id, reply)
        except redis.RedisError as exc:
            log.warning("could not answer resync request %s: %s", request_id, exc)
