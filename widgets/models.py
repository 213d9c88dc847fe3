from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT

from licenses.fields import EncryptedJSONField
from licenses.models import License


def new_public_id() -> str:
    return "wgt_" + secrets.token_urlsafe(12)


def new_token_id() -> str:
    return secrets.token_urlsafe(16)


class WidgetType(models.TextChoices):
    N8N = "n8n", "n8n chat"
    CHATKIT = "chatkit", "OpenAI ChatKit"


def _type_follows_provider(name: str) -> models.CheckConstraint:
    # The database itself refuses a chatkit config stored as widget_type='n8n' (seed 002, bug 1).
    return models.CheckConstraint(condition=Q(widget_type=KT("config__connection__provider")), name=name)


class Widget(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=new_public_id, editable=False)
    license = models.ForeignKey(License, on_delete=models.CASCADE, related_name="widgets")
    name = models.CharField(max_length=200)
    widget_type = models.CharField(max_length=16, choices=WidgetType.choices, default=WidgetType.N8N)
    config = models.JSONField(help_text="The draft config (see widgets/config_schema.py).")
    revision = models.PositiveIntegerField(default=1, help_text="Bumped on every draft save; guards stale edits.")
    published_version = models.ForeignKey(
        "WidgetVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    secrets = EncryptedJSONField(help_text="Encrypted provider credentials; never serialised.")
    chat_failures = models.PositiveIntegerField(
        default=0, help_text="Visitors' chat messages that got no answer (n8n timeout or error), ever."
    )
    last_chat_failure_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [_type_follows_provider("widget_type_follows_provider")]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    @property
    def has_unpublished_changes(self) -> bool:
        return self.published_version is None or self.published_version.config != self.config


class WidgetVersion(models.Model):
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    widget_type = models.CharField(max_length=16, choices=WidgetType.choices)
    config = models.JSONField()
    note = models.CharField(max_length=300, blank=True)
    published_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["widget", "number"], name="version_unique_number"),
            _type_follows_provider("version_type_follows_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.widget_id} v{self.number}"


class Channel(models.TextChoices):
    CHAT = "chat", "Chat (n8n)"
    CHATKIT = "chatkit", "ChatKit"
    VOICE = "voice", "Voice"


class Conversation(models.Model):
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    visitor_id = models.CharField(max_length=128, blank=True, db_index=True)
    session_id = models.CharField(max_length=200, blank=True, db_index=True)
    is_preview = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=64, blank=True)
    usage = models.JSONField(default=dict, blank=True, help_text="Token counts summed from upstream events.")
    audio_in_seconds = models.FloatField(default=0)
    audio_out_seconds = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Relayed voice calls: the live call's last checkpoint (reaper input)."
    )
    failed_at = models.DateTimeField(
        null=True, blank=True, help_text="ChatKit: when a turn last failed upstream (bot health, widgets/health.py)."
    )
    page_url = models.CharField(
        max_length=500, blank=True, help_text="The page the visitor was on when the conversation started (chat)."
    )
    identity = models.JSONField(
        default=dict,
        blank=True,
        help_text="Switchboard('identify') (issue 15.2): user_id, email, name, attributes and whether it was verified.",
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["widget", "channel", "session_id"]),
            # The inbox (widgets/inbox.py): newest first, per widget or across the agency's widgets.
            models.Index(fields=["widget", "-started_at", "-id"], name="conversation_widget_recent"),
            models.Index(fields=["-started_at", "-id"], name="conversation_recent"),
            # The voice reaper's scan: open calls only.
            models.Index(
                fields=["heartbeat_at"], condition=Q(ended_at__isnull=True), name="conversation_open_heartbeat"
            ),
        ]
        constraints = [
            # One live n8n chat conversation per session: concurrent first messages race to insert it,
            # one wins and counts the quota, the others join it (widgets.chat.chat_turn_record).
            models.UniqueConstraint(
                fields=["widget", "session_id"],
                name="conversation_unique_chat_session",
                condition=Q(channel="chat", is_preview=False) & ~Q(session_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.session_id or self.pk}"


class Message(models.Model):
    """One message per turn (never per delta)."""

    class Role(models.TextChoices):
        USER = "user", "Visitor"
        ASSISTANT = "assistant", "Assistant"
        TOOL = "tool", "Tool"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True, help_text="Structured UI events of this turn.")
    item_id = models.CharField(max_length=100, blank=True, help_text="Upstream item id, for voice turns.")
    failure_kind = models.CharField(
        max_length=32,
        blank=True,
        help_text="A visitor's message that got no answer: upstream_timeout, upstream_error, target_not_allowed.",
    )
    upstream_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The HTTP status the upstream answered a failed turn with, if any."
    )
    latency_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the upstream took for this turn (answered or failed)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation"], condition=~Q(failure_kind=""), name="message_failed"),
            # The bot-health scan (widgets/health.py): the last minutes' visitor turns.
            models.Index(fields=["created_at"], condition=Q(role="user"), name="message_user_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class Lead(models.Model):
    class Delivery(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "No CRM webhook"

    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="leads")
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="leads"
    )
    source = models.CharField(max_length=32, default="voice", help_text="voice, chat, chatkit, trade_in_form")
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    interest = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    delivery_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    delivery_attempts = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker last moved it to sending.")
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The lead reaper's scan: undelivered leads only.
            models.Index(
                fields=["delivery_status", "claimed_at"],
                condition=Q(delivery_status__in=["pending", "sending"]),
                name="lead_undelivered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.email or 'lead'} ({self.widget_id})"


class KnowledgeEntry(models.Model):
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="knowledge")
    question = models.CharField(max_length=500, help_text="Title or question.")
    answer = models.TextField()
    tags = models.CharField(max_length=300, blank=True)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "knowledge entries"

    def __str__(self) -> str:
        return self.question


class Product(models.Model):
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="products")
    sku = models.CharField(max_length=100, blank=True)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    image_url = models.URLField(max_length=2000, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    in_stock = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            models.UniqueConstraint(fields=["widget", "sku"], condition=~Q(sku=""), name="product_unique_sku"),
        ]

    def __str__(self) -> str:
        return self.title


class PreviewLink(models.Model):
    """A signed, expiring, revocable link that shows a widget's draft to someone without an account."""

    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="preview_links")
    token_id = models.CharField(max_length=40, unique=True, default=new_token_id, editable=False)
    label = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"preview {self.token_id} of {self.widget_id}"


class Incident(models.Model):
    """A widget's bot is down (widgets/health.py): opened when its failure rate over the health window
    passes the threshold or its upstream stops answering, closed when a turn succeeds again with the rate
    back under it. The agency is notified once when it opens and once when it recovers."""

    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="incidents")
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Visitor turns in the window when it opened.")
    failures = models.PositiveIntegerField(default=0, help_text="Of which failed.")
    failure_kind = models.CharField(max_length=64, blank=True, help_text="The latest failure's kind.")
    notified_at = models.DateTimeField(null=True, blank=True)
    recovered_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["widget"], condition=Q(closed_at__isnull=True), name="incident_one_open")
        ]

    def __str__(self) -> str:
        return f"{self.widget} down since {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


class DailyStat(models.Model):
    """One day of one widget on one channel (widgets/analytics.py rolls it up): what the analytics page
    and the rebilling CSV read instead of scanning messages on every view."""

    day = models.DateField()
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="daily_stats")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    conversations = models.PositiveIntegerField(default=0)
    turns = models.PositiveIntegerField(default=0, help_text="Visitor turns.")
    failed_turns = models.PositiveIntegerField(default=0)
    voice_seconds = models.FloatField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    leads = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "widget", "channel"], name="dailystat_unique")]
        indexes = [models.Index(fields=["widget", "day"], name="dailystat_widget_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.widget_id} {self.channel}"


class DailyQuestion(models.Model):
    """How many conversations of a widget started that day with this (normalised) first question."""

    day = models.DateField()
    widget = models.ForeignKey(Widget, on_delete=models.CASCADE, related_name="daily_questions")
    question = models.CharField(max_length=200)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "widget", "question"], name="dailyquestion_unique")]
        indexes = [models.Index(fields=["widget", "day"], name="dailyquestion_widget_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.question[:40]}"
