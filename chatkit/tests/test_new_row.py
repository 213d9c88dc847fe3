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
