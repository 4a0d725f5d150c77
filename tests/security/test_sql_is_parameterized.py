"""SQL is never built from values by string formatting: values travel as query parameters.

A syntactic check, simple on purpose: every statement passed to execute/executemany/copy in consumer/
is a name (a constant of consumer/queries.py) or a plain literal, never an f-string, `%`, `+` or
`.format()` expression; identifiers that must vary go through psycopg.sql composition. And the
constants in consumer/queries.py are plain literals themselves.
"""

from __future__ import annotations

import ast

from tests.support import ROOT

PACKAGE = ROOT / "consumer"
EXECUTING = {"execute", "executemany", "copy"}


def built_by_formatting(node: ast.expr) -> bool:
    """True for f"...", "..." % x, "..." + x and "...".format(x), also when then .encode()d."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "encode":
            return built_by_formatting(node.func.value)
        if node.func.attr == "format":
            # psycopg.sql.SQL("... {} ...").format(sql.Identifier(...)) quotes what it composes.
            inner = node.func.value
            is_sql_composition = (
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Attribute | ast.Name)
                and (inner.func.attr if isinstance(inner.func, ast.Attribute) else inner.func.id) == "SQL"
            )
            return not is_sql_composition
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add)


def statements() -> list[tuple[str, ast.expr]]:
    """(file:line, first argument) of every execute-like call in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call)]
        for node in calls:
            if isinstance(node.func, ast.Attribute) and node.func.attr in EXECUTING and node.args:
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.args[0]))
    return found


def test_no_statement_is_built_by_string_formatting() -> None:
    calls = statements()
    assert len(calls) > 20, "the scan found too few statements to mean anything"
    assert [where for where, statement in calls if built_by_formatting(statement)] == []


def test_the_query_module_holds_only_literals() -> None:
    tree = ast.parse((PACKAGE / "queries.py").read_text())
    formatted = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.expr) and not isinstance(node, ast.Constant) and built_by_formatting(node)
    ]
    assert formatted == []


def test_the_check_is_not_vacuous() -> None:
    def flagged(source: str) -> bool:
        call = ast.parse(source).body[0]
        assert isinstance(call, ast.Expr)
        assert isinstance(call.value, ast.Call)
        return built_by_formatting(call.value.args[0])

    assert flagged("conn.execute(f\"SELECT * FROM contact WHERE email = '{email}'\")")
    assert flagged('conn.execute("SELECT * FROM contact WHERE id = %s" % contact_id)')
    assert flagged('conn.execute("SELECT * FROM contact WHERE email = " + email)')
    assert flagged('conn.execute("SELECT {}".format(email).encode())')
    assert not flagged("conn.execute(queries.CONTACTS, [email])")
    assert not flagged('conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))')
