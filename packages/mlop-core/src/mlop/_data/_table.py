"""``mlop.Table``: rows and named, typed columns (predictions, evaluation samples), sent as data."""

from __future__ import annotations

import datetime
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from mlop._loggable import Items, Loggable, MediaSink
from mlop._values import jsonable

__all__ = ["Table"]

_WHAT: Final = "mlop.Table"
DATA_TYPE: Final = "TABLE"

# pandas dtype kinds (numpy's letters) to the protocol's column dtypes.
_KINDS: Final = {"b": "bool", "i": "int", "u": "int", "f": "float", "M": "datetime", "m": "timedelta"}


def _is_dataframe(data: Any) -> bool:
    return (
        type(data).__module__.split(".")[0] == "pandas"
        and hasattr(data, "columns")
        and hasattr(data, "dtypes")
    )


def _cell(value: Any) -> Any:
    """A cell as JSON holds it: numbers and strings as they are, non-finite floats as the protocol's strings
    ("NaN", "Infinity", "-Infinity"), missing values (None, pandas' NA and NaT) as null, dates as ISO."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        try:
            return _cell(item())
        except Exception:  # broad: a foreign scalar's item() may raise anything; fall through
            pass
    if isinstance(value, numbers.Number):
        return _cell(float(value))  # type: ignore[arg-type]
    return jsonable(value)


def _dtype(values: Sequence[Any]) -> str:
    """A column's dtype from its cells: bool, int, float, str, datetime, null (all missing) or object."""
    kinds = set()
    for value in values:
        if value is None or type(value).__name__ in ("NAType", "NaTType"):
            continue
        numpy_kind = getattr(getattr(value, "dtype", None), "kind", None)
        if numpy_kind is not None and numpy_kind in _KINDS:
            kinds.add(_KINDS[numpy_kind])
        elif isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, numbers.Integral):
            kinds.add("int")
        elif isinstance(value, numbers.Real):
            kinds.add("float")
        elif isinstance(value, str):
            kinds.add("str")
        elif isinstance(value, (datetime.datetime, datetime.date)):
            kinds.add("datetime")
        else:
            kinds.add("object")
    if not kinds:
        return "null"
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "object"


class Table(Loggable):
    """A table, sent to the server as data (the protocol's ``TABLE`` type).

    Args:
        data: a list of rows (each a sequence of cells, or a mapping from column name to cell), a dict
            of columns (name to a list of cells), or a pandas DataFrame.
        columns: the column names; by default the DataFrame's, the mappings' keys, or "0", "1", ...
        rows: row labels, one per row (a DataFrame's index is used when it is not the default 0..n-1).
        dataframe: a pandas DataFrame, as a keyword.

    Cells are kept as JSON holds them: numbers, strings, booleans and null; non-finite floats as "NaN",
    "Infinity", "-Infinity"; dates as ISO strings. Each column gets a dtype: ``int``, ``float``, ``bool``,
    ``str``, ``datetime``, ``null`` (all missing) or ``object`` (mixed); a DataFrame's columns keep
    pandas' dtype.

    Raises:
        ValueError: rows of different lengths, or a number of names or labels that does not match.
        TypeError: both ``data`` and ``dataframe``, or data that is not rows.
    """

    log_type: ClassVar[str] = "TABLE"

    def __init__(
        self,
        data: Any = None,
        columns: Sequence[Any] | None = None,
        rows: Sequence[Any] | None = None,
        dataframe: Any = None,
    ) -> None:
        if data is not None and dataframe is not None:
            raise TypeError(f"{_WHAT} takes data or dataframe, not both")
        data = dataframe if dataframe is not None else data
        dtypes: list[str | None]
        if data is None:
            cells: list[list[Any]] = []
            names = [str(c) for c in columns or []]
            dtypes = [None] * len(names)
        elif _is_dataframe(data):
            names = [str(c) for c in data.columns] if columns is None else [str(c) for c in columns]
            if len(names) != len(data.columns):
                raise ValueError(f"{_WHAT}: {len(names)} column names for {len(data.columns)} columns")
            dtypes = [_pandas_dtype(d) for d in data.dtypes]
            cells = [list(row) for row in data.itertuples(index=False, name=None)]
            if rows is None and not _default_index(data.index):
                rows = list(data.index)
        elif isinstance(data, Mapping):
            names = [str(c) for c in data] if columns is None else [str(c) for c in columns]
            if len(names) != len(data):
                raise ValueError(f"{_WHAT}: {len(names)} column names for {len(data)} columns")
            values = []
            for name, column in zip(names, data.values(), strict=True):
                if isinstance(column, (str, bytes)) or not hasattr(column, "__iter__"):
                    raise TypeError(f"{_WHAT}: the column {name!r} is not a list of cells")
                values.append(list(column))
            if len({len(v) for v in values}) > 1:
                lengths = ", ".join(f"{n}: {len(v)}" for n, v in zip(names, values, strict=True))
                raise ValueError(f"{_WHAT}: columns of different lengths ({lengths})")
            cells = [list(row) for row in zip(*values, strict=True)]
            dtypes = [None] * len(names)
        elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
            raise TypeError(f"{_WHAT} takes a list of rows or a pandas DataFrame, not {type(data).__name__}")
        else:
            cells, names = _rows(list(data), columns)
            dtypes = [None] * len(names)
        width = len(names)
        for number, row in enumerate(cells):
            if len(row) != width:
                raise ValueError(f"{_WHAT}: row {number} has {len(row)} cells, the table {width} columns")
        if rows is not None and len(rows) != len(cells):
            raise ValueError(f"{_WHAT}: {len(rows)} row labels for {len(cells)} rows")
        self.columns = names
        self.rows = [_cell(r) for r in rows] if rows is not None else None
        self.dtypes = [d or _dtype([row[i] for row in cells]) for i, d in enumerate(dtypes)]
        self.data = [[_cell(v) for v in row] for row in cells]

    def to_dict(self) -> dict[str, Any]:
        """The protocol's table payload: ``table``, ``col`` (name and dtype), ``row`` (labels, when the
        table has them), ``type`` and ``v``."""
        payload: dict[str, Any] = {
            "table": [list(row) for row in self.data],
            "col": [{"name": n, "dtype": d} for n, d in zip(self.columns, self.dtypes, strict=True)],
        }
        if self.rows is not None:
            payload["row"] = list(self.rows)
        payload["type"] = "Table"
        payload["v"] = 1
        return payload

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """One ``data`` item with the payload of :meth:`to_dict`."""
        return [("data", (step, time, key, DATA_TYPE, self.to_dict()))]


def _rows(data: list[Any], columns: Sequence[Any] | None) -> tuple[list[list[Any]], list[str]]:
    """Cells and column names from a list of rows (sequences, or mappings by column name)."""
    if data and all(isinstance(row, Mapping) for row in data):
        names = [str(c) for c in columns] if columns is not None else []
        if columns is None:
            for row in data:
                names.extend(str(k) for k in row if str(k) not in names)
        by_name = [{str(k): v for k, v in row.items()} for row in data]
        return [[row.get(n) for n in names] for row in by_name], names
    cells: list[list[Any]] = []
    for number, row in enumerate(data):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
            raise TypeError(f"{_WHAT}: row {number} is a {type(row).__name__}, not a sequence of cells")
        cells.append(list(row))
    if columns is not None:
        names = [str(c) for c in columns]
    else:
        names = [str(i) for i in range(len(cells[0]) if cells else 0)]
    return cells, names


def _pandas_dtype(dtype: Any) -> str | None:
    """A pandas dtype's protocol name; None for ``object``, whose cells decide."""
    kind = getattr(dtype, "kind", "O")
    if kind in _KINDS:
        return _KINDS[kind]
    name = str(dtype)
    if name in ("string", "str") or name.startswith("string"):
        return "str"
    if name == "boolean":
        return "bool"
    if name.startswith(("Int", "UInt")):
        return "int"
    if name.startswith("Float"):
        return "float"
    if name == "category":
        return "category"
    return None


def _default_index(index: Any) -> bool:
    """Whether a DataFrame's index is the default 0..n-1 (then it is not kept as row labels)."""
    return type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1
