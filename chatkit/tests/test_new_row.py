"""`chatkit.services._NewRow`: the loop path's new-thread statement (chatkit_thread_open_async) computes the values the
ORM would INSERT without building the instances first (issue 8 bench: the pre-stream CPU per request). It must give
the same database values as `Model(**given)` + `pre_save` + `get_db_prep_save` on every field, on either backend, and
refuse a field whose `pre_save` it does not know."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from django.db import connection, models

from chatkit.models import ChatKitThread
from chatkit.services import _NewRow
from widgets.models import Channel, Conversation

NOW = datetime(2026, 12, 4, 20, 40, 1, 123456, tzinfo=UTC)


def _orm_params(obj: models.Model, name: str, skip: tuple[str, ...] = ()) -> dict:
    fields = [f for f in obj._meta.concrete_fields if not f.primary_key and f.column not in skip]
    return _comparable({f"{name}__{f.column}": f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields})


def _comparable(params: dict) -> dict:
    """PostgreSQL's JSON parameters are psycopg `Jsonb` wrappers, which compare by identity: their JSON instead."""
    return {k: (type(v).__name__, v.obj) if type(v).__name__ == "Jsonb" else v for k, v in params.items()}


@pytest.mark.django_db
def test_a_new_rows_values_are_the_ones_the_orm_would_insert(chatkit_widget, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)  # auto_now / auto_now_add
    given = {
        "channel": Channel.CHATKIT,
        "visitor_id": "sb_" + "a" * 64,
        "session_id": "thr_0123456789abcdef01234567",
        "is_preview": False,
        "usage": {"model": "gpt-5-mini"},
        "identity": {"user_id": "u1", "verified": True},
    }
    plan = _NewRow(Conversation, "conversation")
    params, values = plan.params({**given, "widget_id": chatkit_widget.pk}, now=NOW)
    orm = Conversation(widget=chatkit_widget, **given)
    assert _comparable(params) == _orm_params(orm, "conversation")
    saved = plan.row(41, values)
    assert saved.pk == 41 and not saved._state.adding and saved._state.db == "default"
    orm_values = {f.attname: getattr(orm, f.attname) for f in Conversation._meta.concrete_fields if not f.primary_key}
    assert {a: getattr(saved, a) for a in orm_values} == orm_values

    thread_given = {
        "thread_id": given["session_id"],
        "owner": given["visitor_id"],
        "is_preview": True,
        "created_at": NOW,
        "data": {"id": given["session_id"], "title": None, "status": {"type": "active"}},
    }
    plan = _NewRow(ChatKitThread, "thread", skip=("conversation_id",))
    params, _ = plan.params({**thread_given, "widget_id": chatkit_widget.pk}, now=NOW)
    orm = ChatKitThread(widget=chatkit_widget, **thread_given)
    assert _comparable(params) == _orm_params(orm, "thread", skip=("conversation_id",))
    assert "thread__conversation_id" not in params  # the statement fills it


def test_a_value_of_another_type_is_still_adapted_by_its_field():
    # `as_is` skips get_db_prep_save only for the exact type the field stores unchanged.
    plan = _NewRow(Conversation, "conversation")
    params, _ = plan.params({"widget_id": 1, "visitor_id": 12345, "is_preview": 0}, now=NOW)
    assert params["conversation__visitor_id"] == "12345"
    assert params["conversation__is_preview"] is False


def test_a_field_whose_pre_save_changes_the_value_is_refused():
    class Slugged(models.CharField):
        def pre_save(self, model_instance, add):
            return "changed"

    field = Slugged(max_length=10)
    field.set_attributes_from_name("slug")
    fake = SimpleNamespace(__name__="Fake", _meta=SimpleNamespace(concrete_fields=[field]))
    with pytest.raises(TypeError, match="Fake.slug"):
        _NewRow(fake, "fake")

    auto = models.DateField(auto_now=True)  # a date, not the statement's datetime `now`
    auto.set_attributes_from_name("day")
    with pytest.raises(TypeError, match="Fake.day"):
        _NewRow(SimpleNamespace(__name__="Fake", _meta=SimpleNamespace(concrete_fields=[auto])), "fake")


def test_the_loop_paths_parameters_build_no_database_wrapper_per_request(chatkit_widget, monkeypatch):
    """On a server loop every request is a task with a context of its own, in which `connections["default"]`
    (an asgiref Local) built a new DatabaseWrapper: the loop path adapts its values with one per process
    (`widgets.aio.loop_db`) and wraps psycopg's errors with it."""
    import asyncio

    from django.db import connections

    from chatkit.services import _reserve_params
    from widgets.aio import _django_errors, loop_db

    loop_db()  # built once
    built: list[str] = []
    real = connections.create_connection
    monkeypatch.setattr(connections, "create_connection", lambda alias: built.append(alias) or real(alias))
    plan = _NewRow(Conversation, "conversation")
    license = chatkit_widget.license

    async def request() -> None:
        _reserve_params(license, now=NOW, month=NOW.date())
        plan.params({"widget_id": chatkit_widget.pk, "usage": {"model": "m"}}, now=NOW)
        with _django_errors():
            pass

    async def requests() -> None:
        await asyncio.gather(*(asyncio.ensure_future(request()) for _ in range(3)))

    asyncio.run(requests())
    assert built == []
    assert loop_db() is loop_db() and loop_db().vendor == connection.vendor


def test_json_parameters_hold_the_json_the_orm_would_write():
    """`widgets.aio.pg_json_param`: orjson's text for the ORM's json.dumps on PostgreSQL (the same jsonb once
    parsed); anything it does not take (None, a field with an encoder, another database) the ORM's adaptation."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    from widgets.aio import loop_db, pg_json_param

    field = Conversation._meta.get_field("usage")
    value = {"model": "gpt-5-mini", "n": [1, 2.5, None, True], "text": "é \u2028 \ud800"}  # a lone surrogate too
    param = pg_json_param(field, value)
    orm = field.get_db_prep_save(value, loop_db())
    if connection.vendor == "postgresql":
        assert type(param) is type(orm) and param.obj is value
        assert json.loads(param.dumps(value)) == json.loads(json.dumps(value)) == value
    else:
        assert param == orm
    assert pg_json_param(field, None) is None
    encoded = models.JSONField(encoder=DjangoJSONEncoder)
    encoded.set_attributes_from_name("encoded")
    assert type(pg_json_param(encoded, value)) is type(encoded.get_db_prep_save(value, loop_db()))
