"""The task table and the pure task rules, without I/O."""

from __future__ import annotations

from typing import Any

from funnel_proxy._tasks_routing import (
    MAX_TTL_SECONDS,
    RELATED_TASK,
    ClientTaskTable,
    TaskTable,
    client_declares_tasks,
    client_takes_task,
    created_task,
    merged_tasks_capability,
    task_support,
    with_task_id,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_colliding_backend_ids_get_distinct_shown_ids_that_map_back() -> None:
    table = TaskTable()
    a = table.add("alpha", "1", None, 60_000)
    b = table.add("beta", "1", None, 60_000)
    assert a.exposed != b.exposed
    found_a, found_b = table.find(a.exposed), table.find(b.exposed)
    assert found_a is not None and (found_a.server, found_a.task_id) == ("alpha", "1")
    assert found_b is not None and (found_b.server, found_b.task_id) == ("beta", "1")
    assert table.of_backend("beta", "1") == b


def test_a_task_is_forgotten_when_its_ttl_ends_and_unlimited_is_bounded() -> None:
    clock = Clock()
    table = TaskTable(clock=clock)
    short = table.add("s", "a", None, 1_000)
    forever = table.add("s", "b", None, None)
    clock.now += 1.5
    assert table.find(short.exposed) is None
    assert table.find(forever.exposed) is not None
    clock.now += MAX_TTL_SECONDS
    assert table.find(forever.exposed) is None
    assert len(table) == 0


def test_the_table_is_bounded_oldest_first() -> None:
    table = TaskTable(max_tasks=2)
    first = table.add("s", "1", None, None)
    table.add("s", "2", None, None)
    table.add("s", "3", None, None)
    assert len(table) == 2
    assert table.find(first.exposed) is None
    assert table.of_backend("s", "1") is None


def test_only_the_owner_finds_its_task_and_forgetting_the_owner_drops_it() -> None:
    table = TaskTable()
    owner, other = object(), object()
    route = table.add("s", "1", owner, None)
    assert table.find(route.exposed, owner) == route
    assert table.find(route.exposed, other) is None
    assert table.owned_by(other) == []
    table.forget_owner(owner)
    assert table.find(route.exposed, owner) is None


def test_created_task_reads_both_eras_and_ignores_ordinary_results() -> None:
    assert created_task({"task": {"taskId": "t", "status": "working"}}) == {
        "taskId": "t",
        "status": "working",
    }
    modern = {"resultType": "task", "taskId": "t", "status": "working"}
    assert created_task(modern) == modern
    assert created_task({"content": [], "isError": False}) is None
    assert created_task({"resultType": "complete", "taskId": "t"}) is None


def test_with_task_id_renames_the_task_and_its_related_task_meta() -> None:
    shown = with_task_id(
        {"task": {"taskId": "t"}, "_meta": {RELATED_TASK: {"taskId": "t"}, "k": 1}}, "s:t"
    )
    assert shown == {"task": {"taskId": "s:t"}, "_meta": {RELATED_TASK: {"taskId": "s:t"}, "k": 1}}
    assert with_task_id({"taskId": "t", "status": "completed"}, "s:t")["taskId"] == "s:t"


def test_capabilities_and_tool_support() -> None:
    assert client_declares_tasks({"tasks": {}})
    assert client_declares_tasks({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    assert not client_declares_tasks({"elicitation": {}})
    assert task_support({"execution": {"taskSupport": "required"}}) == "required"
    assert task_support({"name": "x"}) == "forbidden"
    assert merged_tasks_capability([{"tools": {}}]) is None
    assert merged_tasks_capability(
        [{"tasks": {"list": {}}}, {"tasks": {"cancel": {}, "requests": {"tools": {"call": {}}}}}]
    ) == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}


def test_client_tasks_of_two_clients_never_collide_and_only_their_backend_polls() -> None:
    clock = Clock()
    table = ClientTaskTable(clock=clock)
    alice, bob = object(), object()
    a = table.add("everything", alice, "1", 1_000)
    b = table.add("everything", bob, "1", None)
    assert a.exposed != b.exposed
    found = table.find(a.exposed, "everything")
    assert found is not None and found.client is alice and found.task_id == "1"
    assert table.find(a.exposed, "another-backend") is None
    clock.now += 2
    assert table.find(a.exposed, "everything") is None
    table.forget_client(bob)
    assert table.find(b.exposed, "everything") is None


def test_client_takes_task_reads_the_request_categories() -> None:
    declared: dict[str, Any] = {"tasks": {"requests": {"elicitation": {"create": {}}}}}
    assert client_takes_task(declared, "elicitation/create")
    assert not client_takes_task(declared, "sampling/createMessage")
    assert not client_takes_task({"tasks": {}}, "elicitation/create")
    assert not client_takes_task({}, "roots/list")
