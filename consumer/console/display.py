"""How the console shows things: masked values, times, and the graph as the drawing library takes it."""

from __future__ import annotations

from datetime import UTC, datetime

from consumer.console.identity import Link, Picture

BULLET = "\u2022"


def mask(value: str | None) -> str:
    """Enough of a value to tell it from its neighbours on screen, not enough to read it out."""
    if not value:
        return ""
    local, at, domain = value.partition("@")
    if at:
        return f"{local[:1]}{BULLET * 3}@{domain}"
    return f"{BULLET * 3}{value[-2:]}"


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def link_label(link: Link) -> str:
    shown = " + ".join(map(mask, link.value.split())) if link.kind == "merge" else mask(link.value)
    return f"{link.kind} {shown}"


def graph(p: Picture, *, full_values: bool) -> dict[str, object]:
    """Nodes and edges for cytoscape.js; the full shared value only for an operator allowed to read it."""
    on_path = {link.key for link in p.path or ()}
    nodes = [
        {
            "data": {
                "id": str(row.id),
                "label": "\n".join(
                    (f"#{row.id}{' (primary)' if row.primary else ''}", when(row.created_at), row.source)
                ),
                "primary": row.primary,
            }
        }
        for row in p.rows
    ]
    edges = [
        {
            "data": {
                "id": link.key,
                "source": str(link.a),
                "target": str(link.b),
                "label": link_label(link),
                "full": f"{link.kind}: {link.value}" if full_values else None,
            },
            "classes": "path" if link.key in on_path else "",
        }
        for link in p.links
    ]
    return {"nodes": nodes, "edges": edges}
