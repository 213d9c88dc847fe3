"""ChatKit server mode storage: a thread per visitor conversation and its items (openai-chatkit's Store).

A thread belongs to one widget and one visitor owner (`chatkit.tokens.chatkit_user_id`), and to
the `widgets.Conversation` (channel chatkit) where the agency reads the transcript as turns. Items
are the SDK's pydantic objects as JSON, unique per (thread, item_id) because assistant messages
reuse the Responses API message id; pages are keyset on (created_at, seq).
"""

from __future__ import annotations

from django.db import models

from widgets.models import Conversation, Widget


class ChatKitThread(models.Model):
    seq = models.BigAutoField(primary_key=True)
    thread_id = models.CharField(max_length=64, unique=True)
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="chatkit_threads")
    owner = models.CharField(max_length=128, help_text="The visitor's ChatKit user (sb_<hmac>), never the raw id.")
    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="chatkit_thread")
    is_preview = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    data = models.JSONField(help_text="chatkit.types.ThreadMetadata as JSON (title, status, metadata).")

    class Meta:
        indexes = [models.Index(fields=["widget", "owner", "created_at", "seq"], name="chatkit_thread_owner_page")]

    def __str__(self) -> str:
        return self.thread_id


class ChatKitItem(models.Model):
    seq = models.BigAutoField(primary_key=True)
    thread = models.ForeignKey(ChatKitThread, on_delete=models.CASCADE, related_name="items")
    item_id = models.CharField(max_length=100)
    item_type = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    data = models.JSONField(help_text="One chatkit.types.ThreadItem as JSON.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["thread", "item_id"], name="chatkit_item_unique_id")]
        indexes = [models.Index(fields=["thread", "created_at", "seq"], name="chatkit_item_page")]

    def __str__(self) -> str:
        return f"{self.item_type} {self.item_id}"
