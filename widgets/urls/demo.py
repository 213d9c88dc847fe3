"""The built-in demo n8n Chat Trigger (DEBUG only: the view answers 404 otherwise)."""

from django.urls import path

from widgets.views import demo

urlpatterns = [
    path("demo/n8n/<str:public_id>/chat", demo.demo_chat, name="demo-n8n-chat"),
]
