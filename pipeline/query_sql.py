"""DuckDB connections for ``pipeline.query``: what a query may reach.

* ``connect``: spatial is loaded from the ``duckdb-extension-spatial`` wheel,
  then extension auto-install, auto-load and community extensions are
  switched off, so no query fetches or loads an extension behind its back.
* ``run_sql`` (``aerialdet query --sql``) stays full DuckDB: that is shell
  access for the owner, it reads and writes any file this user can.
* Every other query runs on a connection that ``lock_to_files`` has locked
  once the ``detections`` view exists: ``allowed_paths`` names the output's
  files, ``enable_external_access`` is off (no other file, ``COPY``,
  ``ATTACH``, ``INSTALL`` or ``LOAD``) and the configuration is locked, so
  SQL cannot switch it back.
* ``check_where`` parses ``read_detections``' ``where=`` with DuckDB itself
  (``json_serialize_sql``) and allows one expression made only of column
  references, constants, comparisons, AND/OR/NOT, IN, IS NULL, BETWEEN,
  CASE, casts, arithmetic and ``WHERE_FUNCTIONS``: a subquery (the only way
  a table function such as ``read_text`` gets into an expression), a window,
  a lambda or any other function is refused, naming it.  A whitelist of node
  types, not a denylist of words: what DuckDB adds later is refused until
  named here.
"""

from __future__ import annotations

import glob as globmod
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import OutputError
from pipeline.sources import is_s3_uri

if TYPE_CHECKING:
    import duckdb


class QueryError(OutputError, ValueError):
    """A query cannot run: bad filter value, column, bbox, CRS or SQL."""


# Expression node classes of DuckDB's parse tree that where= may hold.
WHERE_NODES = frozenset(
    {"COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "OPERATOR", "BETWEEN", "CASE", "CAST", "FUNCTION"}
)
# Functions (and the operators DuckDB parses as functions) where= may call: none reads a file.
WHERE_FUNCTIONS = frozenset(
    {
        *("+", "-", "*", "/", "//", "%", "**", "^", "||", "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~"),
        *("abs", "round", "floor", "ceil", "ceiling", "sqrt", "ln", "log", "log10", "exp", "pow", "power"),
        *("greatest", "least", "isnan", "isfinite", "nullif", "ifnull", "struct_extract"),
        *("lower", "upper", "length", "strlen", "contains", "starts_with", "ends_with", "prefix", "suffix"),
        *("substring", "substr", "trim", "concat", "regexp_matches", "regexp_full_match", "like_escape"),
        *(
            "st_intersects",
            "st_contains",
            "st_within",
            "st_covers",
            "st_coveredby",
            "st_disjoint",
            "st_touches",
        ),
        *(
            "st_area",
            "st_makeenvelope",
            "st_point",
            "st_x",
            "st_y",
            "st_centroid",
            "st_distance",
            "st_dwithin",
        ),
        *("st_xmin", "st_xmax", "st_ymin", "st_ymax", "st_envelope", "st_geomfromtext", "st_isvalid"),
    }
)


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with spatial loaded from its wheel; extension auto-install and auto-load off.

    Raises:
        QueryError: the spatial extension cannot be loaded.
    """
    import duckdb

    con = duckdb.connect()
    try:
        import duckdb_extension_spatial

        ext = (
            Path(duckdb_extension_spatial.__file__).parent
            / "extensions"
            / f"v{duckdb.__version__}"
            / "spatial.duckdb_extension"
        )
        con.load_extension(str(ext))
    except (ImportError, duckdb.Error) as exc:
        raise QueryError(
            f"cannot load DuckDB's spatial extension ({exc}); install duckdb-extension-spatial "
            f"matching duckdb {duckdb.__version__}"
        ) from exc
    for setting in (
        "autoinstall_known_extensions",
        "autoload_known_extensions",
        "allow_community_extensions",
    ):
        con.execute(f"SET {setting} = false")
    return con


def lock_to_files(con: Any, files: list[str]) -> None:
    """Let ``con`` read only ``files`` and change no setting from now on.

    Local paths are allowed as given and glob-escaped (the view reads the
    escaped form); an S3 dataset is an Arrow scan registered with the
    connection and needs no file access.
    """
    allowed = sorted({os.path.abspath(p) for f in files if not is_s3_uri(f) for p in (f, globmod.escape(f))})
    con.execute("SET allowed_paths = $paths", {"paths": allowed})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _refused_node(node: Any) -> str | None:
    """The first node of a serialized expression that ``where=`` may not hold, described; None if all may."""
    if isinstance(node, list):
        return next((r for r in map(_refused_node, node) if r), None)
    if not isinstance(node, dict):
        return None
    kind = node.get("class")
    if kind is not None and kind not in WHERE_NODES:
        return "a subquery" if kind == "SUBQUERY" else f"a {kind.lower()} expression"
    if kind == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name not in WHERE_FUNCTIONS or node.get("schema") not in ("", None):
            return f"function {name}()"
    return next((r for r in map(_refused_node, node.values()) if r), None)


def check_where(con: Any, where: str) -> None:
    """Refuse a ``where=`` that is not one plain boolean expression over the columns.

    Raises:
        QueryError: naming the expression and what in it is not allowed.
    """
    import duckdb

    try:
        text = con.execute("SELECT json_serialize_sql($sql)", {"sql": f"SELECT {where}"}).fetchone()[0]
    except duckdb.Error as exc:
        raise QueryError(f"where={where!r}: {exc}") from None
    tree = json.loads(text)
    not_one = f"where={where!r}: must be one boolean expression over the columns, not a query"
    message = str(tree.get("error_message", "not an SQL expression"))
    if tree.get("error"):
        raise QueryError(not_one if "Only SELECT statements" in message else f"where={where!r}: {message}")
    statements = tree.get("statements", [])
    node = statements[0].get("node", {}) if len(statements) == 1 else {}
    plain = (
        node.get("type") == "SELECT_NODE"
        and len(node.get("select_list", [])) == 1
        and node.get("from_table", {}).get("type") == "EMPTY"
        and not node.get("modifiers")
        and not node.get("cte_map", {}).get("map")
        and not node.get("group_expressions")
        and all(node.get(k) is None for k in ("where_clause", "having", "qualify", "sample"))
    )
    if not plain:
        raise QueryError(not_one)
    refused = _refused_node(node["select_list"])
    if refused:
        raise QueryError(
            f"where={where!r}: {refused} is not allowed in where= (column comparisons, constants, "
            "AND/OR/NOT, arithmetic and a few scalar functions only); use run_sql for your own SQL"
        )
