"""Writes for a widget's tenant data: knowledge entries and products (with CSV import).

The server-side tools (widgets/tools.py) search these rows; editors manage them in /app/.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Max

from licenses.api import ApiError, text_problem
from licenses.models import Membership
from licenses.tenancy import role_require
from widgets.models import KnowledgeEntry, Product, Widget

CSV_COLUMNS = ("sku", "title", "description", "price", "currency", "image_url", "url", "in_stock")
CSV_MAX_BYTES = 2_000_000
CSV_MAX_ROWS = 5000
_TRUE = {"1", "true", "yes", "y", "in stock", "instock"}
_FALSE = {"0", "false", "no", "n", "out of stock", "outofstock", ""}
_url = URLValidator(schemes=["http", "https"])


def _text_errors(errors: dict[str, list[str]], **values: str) -> None:
    """Text PostgreSQL cannot store (NUL) is a field error, never a 500."""
    for name, value in values.items():
        problem = text_problem(value)
        if problem is not None and name not in errors:
            errors[name] = [f"Remove {problem} from this text."]


# --- knowledge ------------------------------------------------------------------------------


def _knowledge_clean(question: str, answer: str, tags: str) -> dict[str, str]:
    question, answer, tags = (question or "").strip(), (answer or "").strip(), (tags or "").strip()
    errors: dict[str, list[str]] = {}
    if not question:
        errors["question"] = ["Enter a question or title."]
    elif len(question) > 500:
        errors["question"] = ["At most 500 characters."]
    if not answer:
        errors["answer"] = ["Enter the answer the assistant should give."]
    if len(tags) > 300:
        errors["tags"] = ["At most 300 characters."]
    _text_errors(errors, question=question, answer=answer, tags=tags)
    if errors:
        raise ApiError("invalid", next(iter(errors.values()))[0], fields=errors)
    return {"question": question, "answer": answer, "tags": tags}


def knowledge_create(
    *, widget: Widget, membership: Membership | None, question: str, answer: str, tags: str = ""
) -> KnowledgeEntry:
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    data = _knowledge_clean(question, answer, tags)
    with transaction.atomic():
        position = (widget.knowledge.aggregate(p=Max("position"))["p"] or 0) + 1
        return KnowledgeEntry.objects.create(widget=widget, position=position, **data)


def knowledge_update(
    *, entry: KnowledgeEntry, membership: Membership | None, question: str, answer: str, tags: str = ""
) -> KnowledgeEntry:
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    for name, value in _knowledge_clean(question, answer, tags).items():
        setattr(entry, name, value)
    entry.save()
    return entry


def knowledge_delete(*, entry: KnowledgeEntry, membership: Membership | None) -> None:
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    entry.delete()


# --- products -------------------------------------------------------------------------------


def _bool(raw: Any) -> bool:
    value = str(raw if raw is not None else "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("in_stock must be yes/no, true/false or 1/0")


def product_clean(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate one product's values (form or CSV row): (clean values, errors by field)."""
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    out["sku"] = str(data.get("sku") or "").strip()
    if len(out["sku"]) > 100:
        errors["sku"] = ["At most 100 characters."]
    out["title"] = str(data.get("title") or "").strip()
    if not out["title"]:
        errors["title"] = ["A title is required."]
    elif len(out["title"]) > 300:
        errors["title"] = ["At most 300 characters."]
    out["description"] = str(data.get("description") or "").strip()
    raw_price = str(data.get("price") or "").strip().replace(",", "")
    if raw_price:
        try:
            price = Decimal(raw_price.lstrip("$€£"))
            if not price.is_finite() or price < 0 or price >= Decimal("1e10"):
                raise InvalidOperation
            out["price"] = price.quantize(Decimal("0.01"))
        except InvalidOperation:
            errors["price"] = [f"{raw_price!r} is not a price; use a number such as 399.00."]
    else:
        out["price"] = None
    currency = str(data.get("currency") or "USD").strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        errors["currency"] = [f"{currency!r} is not a 3-letter currency code such as USD."]
    out["currency"] = currency
    for name in ("image_url", "url"):
        value = str(data.get(name) or "").strip()
        if value:
            try:
                _url(value)
            except ValidationError:
                errors[name] = [f"{value!r} is not an http(s) URL."]
        out[name] = value
    try:
        raw = data.get("in_stock")
        out["in_stock"] = True if raw is None else raw if isinstance(raw, bool) else _bool(raw)
    except ValueError as exc:
        errors["in_stock"] = [str(exc)]
    _text_errors(errors, **{k: v for k, v in out.items() if isinstance(v, str)})
    return out, errors


def _duplicate_sku(widget: Widget, sku: str, exclude: int | None) -> bool:
    qs = widget.products.filter(sku=sku)
    if exclude:
        qs = qs.exclude(pk=exclude)
    return bool(sku) and qs.exists()


def product_save(
    *, widget: Widget, membership: Membership | None, data: dict[str, Any], product: Product | None = None
) -> Product:
    """Create (product=None) or update a product from form values."""
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    clean, errors = product_clean(data)
    if not errors and _duplicate_sku(widget, clean["sku"], product.pk if product else None):
        errors["sku"] = [f"Another product already uses SKU {clean['sku']!r}."]
    if errors:
        raise ApiError("invalid", next(iter(errors.values()))[0], fields=errors)
    if product is None:
        return Product.objects.create(widget=widget, **clean)
    for name, value in clean.items():
        setattr(product, name, value)
    product.save()
    return product


def product_delete(*, product: Product, membership: Membership | None) -> None:
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    product.delete()


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def imported(self) -> int:
        return self.created + self.updated


def products_import_csv(*, widget: Widget, membership: Membership | None, data: bytes) -> ImportReport:
    """Import products from CSV (columns CSV_COLUMNS). Good rows upsert by sku; bad rows are reported
    with their line number and reason and skipped."""
    role_require(membership, Membership.Role.EDITOR, "edit this widget's data")
    if len(data) > CSV_MAX_BYTES:
        raise ApiError("invalid", "The file is larger than 2 MB; split it.", fields={"file": ["Too large."]})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(
            "invalid", "The file is not UTF-8 text; export it as CSV UTF-8.", fields={"file": ["Not UTF-8."]}
        )
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "title" not in header:
        raise ApiError(
            "invalid",
            f"The first line must name the columns: {', '.join(CSV_COLUMNS)} (title is required).",
            fields={"file": ["Missing header."]},
        )
    reader.fieldnames = header
    report = ImportReport()
    seen: dict[str, int] = {}
    with transaction.atomic():
        for index, row in enumerate(reader):
            line = index + 2  # line 1 is the header
            if index >= CSV_MAX_ROWS:
                report.errors.append((line, f"Only the first {CSV_MAX_ROWS} rows are imported."))
                break
            if not any((v or "").strip() for k, v in row.items() if k):
                continue
            clean, errors = product_clean({k: v for k, v in row.items() if k in CSV_COLUMNS})
            if errors:
                report.errors.append((line, "; ".join(f"{k}: {m[0]}" for k, m in errors.items())))
                continue
            sku = clean["sku"]
            if sku and sku in seen:
                report.errors.append((line, f"sku: {sku!r} already appears on line {seen[sku]}."))
                continue
            if sku:
                seen[sku] = line
                existing = widget.products.filter(sku=sku).first()
                if existing is not None:
                    for name, value in clean.items():
                        setattr(existing, name, value)
                    existing.save()
                    report.updated += 1
                    continue
            Product.objects.create(widget=widget, **clean)
            report.created += 1
    return report
