"""The named SQL statements of `sql/queries/`, loaded once at import and handed out by name.

Files
    `sql/queries/<concern>.sql` (store, sequencer, invariants, ...), shipped as the data of the `sql.queries`
    package like the migrations. Each statement follows a line `-- name: <lower_snake_name>`; the lines up to
    the next such line are its text, comments included, so each file reads and runs in psql as it is
    (parameters are `$1`, `$2`, ...). A statement's name is unique over all the files.

Use
    `queries.sql("order_by_id")` is the text, for asyncpg's `execute`, `fetch` or `prepare`. Modules bind the
    statements they run to constants at import, so a misspelt name stops the import, never a command.

Refusals
    A duplicate name, a malformed name, text before the first name, or a name with no statement raise
    `QueryError` at import, naming the file: a server must not start with half of its statements.

Why not aiosql
    aiosql reads the same file format but turns each statement into a function over a driver adapter, with
    its own calling conventions (named `:parameters` rewritten to `$n`, result kinds by suffix). The exchange
    needs only the text: the sequencer's hot path hands it to its own connection, whose statement cache
    prepares it once, and a few statements are run as scripts or inside transactions the caller manages.
    Thirty lines of parsing cost less than a dependency and a second way of calling the database.
"""

import re
from importlib import resources
from pathlib import Path

QUERIES_DIR = Path(str(resources.files("sql.queries")))

_NAME_LINE = re.compile(r"^--\s*name:\s*(.*?)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class QueryError(RuntimeError):
    """The named statements cannot be loaded; the message names the file and the line."""


def parse(text: str, source: str) -> dict[str, str]:
    """The statements of one file's `text`, by name; `source` names the file in errors."""
    found: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def close(line_number: int) -> None:
        if name is None:
            return
        body = "\n".join(lines).strip()
        if not _statement(body):
            raise QueryError(f"{source}:{line_number}: the query {name!r} has no statement")
        found[name] = body

    for number, line in enumerate(text.splitlines(), 1):
        match = _NAME_LINE.match(line)
        if match is None:
            if name is None and line.strip() and not line.lstrip().startswith("--"):
                raise QueryError(f"{source}:{number}: a statement before the first `-- name:` line")
            lines.append(line)
            continue
        close(number)
        name, lines = match.group(1), []
        if not _NAME.match(name):
            raise QueryError(f"{source}:{number}: {name!r} is not a lower_snake name")
        if name in found:
            raise QueryError(f"{source}:{number}: the query {name!r} is named twice")
    close(len(text.splitlines()))
    return found


def _statement(body: str) -> bool:
    """Whether `body` holds more than comments."""
    return any(line.strip() and not line.lstrip().startswith("--") for line in body.splitlines())


def load(folder: Path = QUERIES_DIR) -> dict[str, str]:
    """Every statement of the `.sql` files in `folder`, by name."""
    files = sorted(folder.glob("*.sql"))
    if not files:
        raise QueryError(f"no named queries in {folder}: this install of tokex lacks its sql/queries files; "
                         "reinstall it from a wheel or source tree that has them")
    statements: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in files:
        for name, text in parse(path.read_text(encoding="utf-8"), path.name).items():
            if name in statements:
                raise QueryError(f"{path.name}: the query {name!r} is also named in {where[name]}")
            statements[name] = text
            where[name] = path.name
    return statements


STATEMENTS = load()


def sql(name: str) -> str:
    """The text of the statement `name`."""
    try:
        return STATEMENTS[name]
    except KeyError:
        raise QueryError(f"no query named {name!r} in {QUERIES_DIR}") from None
