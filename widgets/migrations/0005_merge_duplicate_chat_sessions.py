# Before the unique constraint of 0006: one conversation per chat session (issue 11.8).

from django.db import migrations, models


def merge_duplicate_chat_sessions(apps, schema_editor):
    """Before the unique constraint: concurrent first messages (issue 11.8) may have opened several
    conversations for one chat session. Keep the first, move the others' messages and leads to it."""
    Conversation = apps.get_model("widgets", "Conversation")
    Message = apps.get_model("widgets", "Message")
    Lead = apps.get_model("widgets", "Lead")
    dupes = (
        Conversation.objects.filter(channel="chat", is_preview=False).exclude(session_id="")
        .values("widget_id", "session_id").annotate(n=models.Count("id")).filter(n__gt=1)
    )
    for dupe in dupes.iterator():
        ids = list(Conversation.objects.filter(channel="chat", is_preview=False, widget_id=dupe["widget_id"],
                                               session_id=dupe["session_id"])
                   .order_by("started_at", "id").values_list("id", flat=True))
        keep, extra = ids[0], ids[1:]
        Message.objects.filter(conversation_id__in=extra).update(conversation_id=keep)
        Lead.objects.filter(conversation_id__in=extra).update(conversation_id=keep)
        Conversation.objects.filter(id__in=extra).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('widgets', '0004_tools_enabled_current_models'),
    ]

    operations = [
        migrations.RunPython(merge_duplicate_chat_sessions, migrations.RunPython.noop),
    ]
