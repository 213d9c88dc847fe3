"""The configurator of one widget: editor page, test connection, versions/rollback, embed code,
knowledge and products. Saving and publishing go through the REST API (/api/v1/widgets/...)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_http_methods, require_POST

from licenses.api import ApiError
from licenses.app_shell import api_error_json, forbidden, json_body, post_action, render_app, role_flags
from licenses.hosts import custom_domain_primary
from licenses.models import Membership
from licenses.tenancy import role_require
from widgets import widget_strings
from widgets.config_diff import config_diff
from widgets.connection_test import TEST_MESSAGE, connection_test
from widgets.loader import API_STUB
from widgets.models import Widget
from widgets.selectors import secrets_status, widget_versions
from widgets.services import catalog
from widgets.services import widgets as services
from widgets.views.configurator.common import draft_connection, widget_view
from widgets.views.configurator.fields import sections_with_values


@widget_view
def configurator(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    return render_app(
        request,
        "app/configurator.html",
        {
            "widget": widget,
            "tab": "configure",
            "sections": sections_with_values(widget.config),
            "secrets": secrets_status(widget=widget),
            "provider": widget.widget_type,
            "knowledge_count": widget.knowledge.count(),
            "product_count": widget.products.count(),
            "domains": widget.license.allowed_domains,
            "nav": "widgets",
            **role_flags(membership),
            "test_message": TEST_MESSAGE,
            "test_timeout": f"{settings.N8N_TOTAL_TIMEOUT:g}",
            "widget_strings": {
                "strings": widget_strings.STRINGS,
                "default_placeholder": widget_strings.DEFAULT_PLACEHOLDER,
            },
            "chatkit_hosted": widget.widget_type == "chatkit"
            and widget.config["connection"]["chatkit"].get("mode") == "hosted",
        },
    )


@widget_view
@require_POST
def test_connection(request: HttpRequest, widget: Widget, membership: Membership) -> JsonResponse:
    """Test the connection with the form's current (unsaved) values; never echoes secrets."""
    try:
        role_require(membership, Membership.Role.EDITOR, "test connections")
        body = json_body(request)
        config, secrets = draft_connection(widget=widget, body=body)
        message = body.get("message") if isinstance(body.get("message"), str) else ""
    except ApiError as exc:
        return api_error_json(exc)
    return JsonResponse(connection_test(config=config, secrets=secrets, message=message.strip()).as_dict())


@widget_view
def versions(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    items = list(widget_versions(widget=widget))
    rows = []
    for index, version in enumerate(items):
        previous = items[index + 1] if index + 1 < len(items) else None
        rows.append(
            {
                "version": version,
                "changes": config_diff(previous.config if previous else None, version.config) if previous else [],
                "is_live": widget.published_version_id == version.pk,
            }
        )
    draft_changes = config_diff(items[0].config, widget.config) if items else []
    return render_app(
        request,
        "app/versions.html",
        {
            "widget": widget,
            "tab": "versions",
            "rows": rows,
            "draft_changes": draft_changes,
            "nav": "widgets",
            **role_flags(membership),
        },
    )


@widget_view
@require_POST
def rollback(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    try:
        number = int(request.POST.get("version", ""))
    except ValueError:
        messages.error(request, "Choose a version to roll back to.")
        return redirect("app-widget-versions", public_id=widget.public_id)
    try:
        version = services.widget_rollback(widget=widget, user=request.user, membership=membership, number=number)
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolled back: v{number} is live again as v{version.number}.")
    return redirect("app-widget-versions", public_id=widget.public_id)


def embed_origin(request: HttpRequest, *, agency_id: int) -> str:
    """Where snippets point: the agency's verified custom domain (issue 15.5) with this request's scheme
    and port (the proxy serves both on the same ones), else this very host."""
    host = custom_domain_primary(agency_id=agency_id)
    if host is None:
        return request.build_absolute_uri("/").rstrip("/")
    _domain, port = split_domain_port(request.get_host())  # the port the browser used for /app/
    default = "443" if request.is_secure() else "80"
    return f"{request.scheme}://{host}" + (f":{port}" if port and port != default else "")


@widget_view
def embed_code(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    origin = embed_origin(request, agency_id=widget.license.agency_id)
    key = widget.license.key
    embed = widget.config["embed"]
    # Both selectors name this widget: `?widget=` makes the loader resolve it server-side (its own
    # ETag and inline config), `data-widget` keeps a tag right if someone trims the query string.
    # The API stub first: calls to window.Switchboard made before the loader finishes are kept.
    script = (
        f"<script>{API_STUB}</script>\n"
        f'<script src="{origin}/api/widget/{key}/chat-widget.js?widget={widget.public_id}" '
        f'data-widget="{widget.public_id}" data-mode="{embed["mode"]}" data-position="{embed["position"]}"'
        + (' data-target="#chat"' if embed["mode"] == "inline" else "")
        + " async></script>"
    )
    iframe = (
        f'<iframe src="{origin}/widget/chatkit/{key}?widget={widget.public_id}" title="Chat" '
        f'style="width:100%;max-width:{embed["width"]}px;height:{embed["height"]}px;border:0" '
        'allow="microphone; clipboard-write"></iframe>'
    )
    return render_app(
        request,
        "app/embed.html",
        {
            "widget": widget,
            "tab": "embed",
            "script": script,
            "iframe": iframe,
            "origin": origin,
            "domains": widget.license.allowed_domains,
            "nav": "widgets",
            **role_flags(membership),
            "chatkit_hosted": widget.widget_type == "chatkit"
            and widget.config["connection"]["chatkit"].get("mode") == "hosted",
        },
    )


# --- knowledge --------------------------------------------------------------------------------


@widget_view
@require_http_methods(["GET", "POST"])
def knowledge(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    values = {"question": "", "answer": "", "tags": ""}
    edit_id = None
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in values}
        pk = request.POST.get("id")
        try:
            if pk:
                entry = get_object_or_404(widget.knowledge, pk=pk)
                edit_id = entry.pk
                catalog.knowledge_update(entry=entry, membership=membership, **values)
                messages.success(request, "Entry saved.")
            else:
                catalog.knowledge_create(widget=widget, membership=membership, **values)
                messages.success(request, "Entry added.")
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields
        else:
            return redirect("app-widget-knowledge", public_id=widget.public_id)
    return render_app(
        request,
        "app/knowledge.html",
        {
            "widget": widget,
            "tab": "knowledge",
            "entries": widget.knowledge.all(),
            "errors": errors,
            "values": values,
            "edit_id": edit_id,
            "nav": "widgets",
            **role_flags(membership),
        },
        status=400 if errors else 200,
    )


@widget_view
@require_POST
def knowledge_delete(request: HttpRequest, widget: Widget, membership: Membership, pk: int) -> HttpResponse:
    entry = get_object_or_404(widget.knowledge, pk=pk)
    return post_action(
        request,
        lambda: catalog.knowledge_delete(entry=entry, membership=membership),
        success="Entry deleted.",
        to="app-widget-knowledge",
        public_id=widget.public_id,
    )


# --- products ---------------------------------------------------------------------------------

PRODUCT_FIELDS = ("sku", "title", "description", "price", "currency", "image_url", "url")


@widget_view
@require_http_methods(["GET", "POST"])
def products(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    values: dict = {"currency": "USD", "in_stock": True}
    edit_id = None
    if request.method == "GET" and request.GET.get("edit", "").isdigit():
        product = get_object_or_404(widget.products, pk=int(request.GET["edit"]))
        edit_id = product.pk
        values = {k: getattr(product, k) for k in PRODUCT_FIELDS} | {"in_stock": product.in_stock}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in PRODUCT_FIELDS}
        values["in_stock"] = request.POST.get("in_stock") == "on"
        pk = request.POST.get("id")
        try:
            product = get_object_or_404(widget.products, pk=pk) if pk else None
            edit_id = product.pk if product else None
            catalog.product_save(widget=widget, membership=membership, data=values, product=product)
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields
        else:
            messages.success(request, "Product saved.")
            return redirect("app-widget-products", public_id=widget.public_id)
    return _products_page(request, widget, membership, errors=errors, values=values, edit_id=edit_id)


def _products_page(request: HttpRequest, widget: Widget, membership: Membership, **extra) -> HttpResponse:
    extra.setdefault("values", {"currency": "USD", "in_stock": True})
    status = 400 if extra.get("errors") or extra.get("import_errors") else 200
    return render_app(
        request,
        "app/products.html",
        {
            "widget": widget,
            "tab": "products",
            "products": widget.products.all(),
            "nav": "widgets",
            "csv_columns": ",".join(catalog.CSV_COLUMNS),
            **role_flags(membership),
            **extra,
        },
        status=status,
    )


@widget_view
@require_POST
def products_import(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    upload = request.FILES.get("file")
    try:
        if upload is None:
            role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
            raise ApiError("invalid", "Choose a CSV file.", fields={"file": ["Choose a CSV file."]})
        report = catalog.products_import_csv(
            widget=widget, membership=membership, data=upload.read(catalog.CSV_MAX_BYTES + 1)
        )
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        return _products_page(request, widget, membership, import_errors=[exc.message])
    return _products_page(request, widget, membership, report=report)


@widget_view
@require_POST
def product_delete(request: HttpRequest, widget: Widget, membership: Membership, pk: int) -> HttpResponse:
    product = get_object_or_404(widget.products, pk=pk)
    return post_action(
        request,
        lambda: catalog.product_delete(product=product, membership=membership),
        success="Product deleted.",
        to="app-widget-products",
        public_id=widget.public_id,
    )


@widget_view
@require_POST
def chatkit_migrate(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    """ "Migrate to server mode" for a hosted ChatKit widget (Agent Builder is shut down)."""
    outcome: dict[str, bool] = {}

    def migrate() -> None:
        _widget, outcome["published"] = services.widget_chatkit_migrate(
            widget=widget, user=request.user, membership=membership
        )

    return post_action(
        request,
        migrate,
        to="app-widget",
        public_id=widget.public_id,
        success=lambda: (
            "Moved to the Switchboard ChatKit server"
            + (
                " and published: the widget answers again."
                if outcome.get("published")
                else ". Review the instructions, then publish."
            )
        ),
    )
