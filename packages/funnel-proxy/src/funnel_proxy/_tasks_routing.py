"""Which backend owns a task, and what the client calls it: pure, tested without I/O.

MCP tasks (2025-11-25 ``params.task`` and ``tasks/get|result|list|cancel``; the
2026-07-28 tasks extension, ``resultType: "task"`` and ``tasks/get|update|cancel``) name
a task by an id its receiver chose. Behind funnel several backends choose ids, so two
may collide: the client is shown ``<server>:<backend id>`` and funnel remembers which
backend (and which of its clients) each shown id stands for, in a :class:`TaskTable`.

The table is bounded (:data:`MAX_TASKS`, the oldest forgotten first) and every entry
expires with its task's ``ttl`` (at most :data:`MAX_TTL_SECONDS`; an unlimited ttl gets
that bound): after it, the backend may have deleted the task anyway, and funnel answers
``tasks/get`` for it like a receiver that does not know the id.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "RELATED_TASK",
    "TASKS_EXTENSION",
    "TASK_METHODS",
    "TASK_NOTIFICATIONS",
    "ClientTask",
    "ClientTaskTable",
    "TaskRoute",
    "TaskTable",
    "backend_offers_extension",
    "backend_offers_task_calls",
    "client_declares_tasks",
    "client_takes_task",
    "created_task",
    "merged_tasks_capability",
    "related_task_id",
    "task_support",
    "with_related_task",
    "with_task_id",
]

#: ``_meta`` key that ties a message to a task.
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
#: The 2026-07-28 tasks extension, in ``capabilities.extensions``.
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
#: Methods that name one task by ``params.taskId`` (routed to its owner).
TASK_METHODS: Final = frozenset({"tasks/get", "tasks/result", "tasks/cancel", "tasks/update"})
#: A receiver's notice that a task changed (2025-11-25, then the 2026-07-28 extension).
TASK_NOTIFICATIONS: Final = frozenset({"notifications/tasks/status", "notifications/tasks"})
#: At most this many tasks are remembered at once.
MAX_TASKS: Final = 10_000
#: A task is remembered at most this long (an unlimited ``ttl`` included).
MAX_TTL_SECONDS: Final = 24 * 3600.0
_SEPARATOR: Final = ":"


@dataclass(frozen=True)
class TaskRoute:
    """One task as funnel knows it.

    Attributes:
        exposed: The id the client sees.
        server: The backend that runs the task.
        task_id: The backend's own id for it.
        owner: The client that created it (``None``: any client may use it, as in the
            stateless era, where no session says who is asking).
        expires: Monotonic time after which the entry is forgotten.
    """

    exposed: str
    server: str
    task_id: str
    owner: object | None
    expires: float


class TaskTable:
    """Shown task id → owning backend (and client), bounded and expiring.

    Args:
        max_tasks: How many tasks are remembered at once.
        clock: Monotonic seconds (a test passes its own).
    """

    def __init__(
        self, *, max_tasks: int = MAX_TASKS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_tasks
        self._clock = clock
        self._by_exposed: OrderedDict[str, TaskRoute] = OrderedDict()
        self._by_backend: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._by_exposed)

    def add(self, server: str, task_id: str, owner: object | None, ttl_ms: object) -> TaskRoute:
        """Remember a task a backend created; return its route (the id to show is ``exposed``).

        ``ttl_ms`` is the task's ``ttl`` (or ``ttlMs``) as the backend sent it: milliseconds,
        or ``None`` for unlimited.
        """
        self._expire()
        seconds = MAX_TTL_SECONDS
        if isinstance(ttl_ms, int | float) and not isinstance(ttl_ms, bool) and ttl_ms >= 0:
            seconds = min(float(ttl_ms) / 1000.0, MAX_TTL_SECONDS)
        exposed = f"{server}{_SEPARATOR}{task_id}"
        old = self._by_exposed.pop(exposed, None)
        if old is not None:
            self._by_backend.pop((old.server, old.task_id), None)
        route = TaskRoute(exposed, server, task_id, owner, self._clock() + seconds)
        self._by_exposed[exposed] = route
        self._by_backend[(server, task_id)] = exposed
        while len(self._by_exposed) > self._max:
            _, oldest = self._by_exposed.popitem(last=False)
            self._by_backend.pop((oldest.server, oldest.task_id), None)
        return route

    def find(self, exposed: object, owner: object | None = None) -> TaskRoute | None:
        """The route of a shown id, if it is known, unexpired and ``owner`` may use it."""
        if not isinstance(exposed, str):
            return None
        self._expire()
        route = self._by_exposed.get(exposed)
        if route is None or (route.owner is not None and route.owner is not owner):
            return None
        return route

    def of_backend(self, server: str, task_id: object) -> TaskRoute | None:
        """The route of a backend's own task id (for its notifications and requests)."""
        if not isinstance(task_id, str):
            return None
        self._expire()
        exposed = self._by_backend.get((server, task_id))
        return self._by_exposed.get(exposed) if exposed is not None else None

    def owned_by(self, owner: object | None) -> list[TaskRoute]:
        """Every remembered task ``owner`` may use, oldest first."""
        self._expire()
        return [
            route
            for route in self._by_exposed.values()
            if route.owner is None or route.owner is owner
        ]

    def forget_owner(self, owner: object) -> None:
        """The client is gone: its tasks are no longer routed to it (nor shown to others)."""
        for route in [r for r in self._by_exposed.values() if r.owner is owner]:
            self._drop(route)

    def forget_server(self, server: str) -> None:
        """The backend's session ended: the ids it chose mean nothing any more."""
        for route in [r for r in self._by_exposed.values() if r.server == server]:
            self._drop(route)

    def _drop(self, route: TaskRoute) -> None:
        self._by_exposed.pop(route.exposed, None)
        self._by_backend.pop((route.server, route.task_id), None)

    def _expire(self) -> None:
        now = self._clock()
        for route in [r for r in self._by_exposed.values() if r.expires <= now]:
            self._drop(route)


@dataclass(frozen=True)
class ClientTask:
    """A task a client runs for a backend's task-augmented request (the other direction).

    Attributes:
        exposed: The id the backend sees.
        server: The backend that asked (only it may poll the task).
        client: The client that runs the task.
        task_id: The client's own id for it.
        expires: Monotonic time after which the entry is forgotten.
    """

    exposed: str
    server: str
    client: object
    task_id: str
    expires: float


class ClientTaskTable:
    """Shown id → the client running a backend's task; ids of two clients never collide.

    Args:
        max_tasks: How many tasks are remembered at once (the oldest forgotten first).
        clock: Monotonic seconds.
    """

    def __init__(
        self, *, max_tasks: int = MAX_TASKS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_tasks
        self._clock = clock
        self._tasks: OrderedDict[str, ClientTask] = OrderedDict()
        self._numbers: dict[int, int] = {}
        self._next = 0

    def add(self, server: str, client: object, task_id: str, ttl_ms: object) -> ClientTask:
        """Remember a task ``client`` created for ``server``; return it (``exposed``: its id)."""
        self._expire()
        number = self._numbers.get(id(client))
        if number is None:
            self._next += 1
            number = self._numbers[id(client)] = self._next
        seconds = MAX_TTL_SECONDS
        if isinstance(ttl_ms, int | float) and not isinstance(ttl_ms, bool) and ttl_ms >= 0:
            seconds = min(float(ttl_ms) / 1000.0, MAX_TTL_SECONDS)
        task = ClientTask(
            f"client-{number}{_SEPARATOR}{task_id}",
            server,
            client,
            task_id,
            self._clock() + seconds,
        )
        self._tasks.pop(task.exposed, None)
        self._tasks[task.exposed] = task
        while len(self._tasks) > self._max:
            self._tasks.popitem(last=False)
        return task

    def find(self, exposed: object, server: str) -> ClientTask | None:
        """The task ``exposed`` names, if ``server`` created it and it has not expired."""
        self._expire()
        task = self._tasks.get(exposed) if isinstance(exposed, str) else None
        return task if task is not None and task.server == server else None

    def forget_client(self, client: object) -> None:
        """The client is gone: its tasks can no longer be polled."""
        for exposed in [e for e, t in self._tasks.items() if t.client is client]:
            del self._tasks[exposed]
        self._numbers.pop(id(client), None)

    def _expire(self) -> None:
        now = self._clock()
        for exposed in [e for e, t in self._tasks.items() if t.expires <= now]:
            del self._tasks[exposed]


_TASK_REQUESTS: Final = {
    "sampling/createMessage": ("sampling", "createMessage"),
    "elicitation/create": ("elicitation", "create"),
}


def client_takes_task(capabilities: Mapping[str, Any], method: str) -> bool:
    """Whether a client declared task-augmented ``method`` (``tasks.requests.…``)."""
    path = _TASK_REQUESTS.get(method)
    tasks = capabilities.get("tasks")
    requests = tasks.get("requests") if isinstance(tasks, dict) else None
    if path is None or not isinstance(requests, dict):
        return False
    category = requests.get(path[0])
    return isinstance(category, dict) and isinstance(category.get(path[1]), dict)


def client_declares_tasks(capabilities: Mapping[str, Any]) -> bool:
    """Whether a client declared task support (2025-11-25 ``tasks``, or the extension)."""
    if isinstance(capabilities.get("tasks"), dict):
        return True
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def task_support(tool: Mapping[str, Any]) -> str:
    """A tool's ``execution.taskSupport``: ``required``, ``optional`` or ``forbidden``."""
    execution = tool.get("execution")
    support = execution.get("taskSupport") if isinstance(execution, dict) else None
    return support if support in ("required", "optional") else "forbidden"


def created_task(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task a result created, or ``None`` for an ordinary result.

    2025-11-25: a ``CreateTaskResult`` holds it in ``task``; 2026-07-28: the result is the
    task itself, marked ``resultType: "task"``.
    """
    if result.get("resultType") == "task" and isinstance(result.get("taskId"), str):
        return dict(result)
    task = result.get("task")
    if isinstance(task, dict) and isinstance(task.get("taskId"), str):
        return task
    return None


def with_task_id(result: Mapping[str, Any], exposed: str) -> dict[str, Any]:
    """``result`` (a ``CreateTaskResult``, a task, a notification's params) showing ``exposed``."""
    out = dict(result)
    if isinstance(out.get("task"), dict) and "taskId" in out["task"]:
        out["task"] = {**out["task"], "taskId": exposed}
    if "taskId" in out:
        out["taskId"] = exposed
    return with_related_task(out, lambda _: exposed)


def related_task_id(params: Mapping[str, Any]) -> str | None:
    """The task a message says it belongs to (``_meta`` ``related-task``), if any."""
    meta = params.get("_meta")
    related = meta.get(RELATED_TASK) if isinstance(meta, dict) else None
    task_id = related.get("taskId") if isinstance(related, dict) else None
    return task_id if isinstance(task_id, str) else None


def with_related_task(
    params: Mapping[str, Any], rename: Callable[[str], str | None]
) -> dict[str, Any]:
    """``params`` with its ``related-task`` id renamed (unchanged when ``rename`` gives ``None``)."""
    out = dict(params)
    task_id = related_task_id(out)
    if task_id is None:
        return out
    renamed = rename(task_id)
    if renamed is None:
        return out
    meta = dict(out["_meta"])
    meta[RELATED_TASK] = {**meta[RELATED_TASK], "taskId": renamed}
    out["_meta"] = meta
    return out


def merged_tasks_capability(backends: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ``tasks`` capability funnel offers: the union of its backends' (``None``: none)."""
    merged: dict[str, Any] = {}
    for capabilities in backends:
        theirs = capabilities.get("tasks")
        if not isinstance(theirs, dict):
            continue
        for key in ("list", "cancel"):
            if isinstance(theirs.get(key), dict):
                merged[key] = {}
        requests = theirs.get("requests")
        tools = requests.get("tools") if isinstance(requests, dict) else None
        if isinstance(tools, dict) and isinstance(tools.get("call"), dict):
            merged["requests"] = {"tools": {"call": {}}}
    return merged or None


def backend_offers_task_calls(capabilities: Mapping[str, Any]) -> bool:
    """Whether a backend declared task-augmented ``tools/call`` (2025-11-25)."""
    merged = merged_tasks_capability([capabilities])
    return merged is not None and "requests" in merged


def backend_offers_extension(capabilities: Mapping[str, Any]) -> bool:
    """Whether a backend declared the 2026-07-28 tasks extension."""
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions
