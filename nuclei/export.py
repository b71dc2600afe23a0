"""Nuclei tables to files, streamed a table at a time: GeoParquet (`nuclei.parquet`) and QuPath GeoJSON
(`nuclei.geojson.gz`, cells with `nucleusGeometry` or detections). Both are written to a temporary file and
renamed into place, so a file under its final name is always whole."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from nuclei.measure import MEASUREMENTS, TABLE_COLUMNS
from wsi.atomic import atomic_file

__all__ = ["GEO_METADATA", "OBJECT_TYPES", "parquet_schema", "read_parquet", "write_geojson", "write_parquet"]

OBJECT_TYPES = ("cell", "detection")

# GeoParquet 1.0: WKB polygons in level-0 pixels; "crs": null says the coordinates are not on the Earth.
GEO_METADATA = {
    "version": "1.0.0",
    "primary_column": "geometry",
    "columns": {
        "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": None, "edges": "planar"}
    },  # fmt: skip
}


def parquet_schema():
    """The Arrow schema of nuclei.parquet, with the GeoParquet 'geo' metadata."""
    import pyarrow as pa

    fields = [pa.field("x", pa.float64()), pa.field("y", pa.float64()), pa.field("geometry", pa.binary())]
    fields += [pa.field(name, pa.float64()) for name in MEASUREMENTS]
    fields += [pa.field("type", pa.string()), pa.field("tile", pa.int64())]
    return pa.schema(fields, metadata={b"geo": json.dumps(GEO_METADATA).encode()})


def write_parquet(path: str | Path, tables: Iterable[pd.DataFrame]) -> int:
    """Write nuclei tables one after another into one GeoParquet file (atomically); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    rows = 0
    with atomic_file(path) as tmp:
        tmp.chmod(0o644)  # mkstemp makes it private; results are for sharing
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for table in tables:
                if len(table):
                    writer.write_table(pa.Table.from_pandas(table[list(TABLE_COLUMNS)], schema=schema,
                                                            preserve_index=False))  # fmt: skip
                    rows += len(table)
    return rows


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A nuclei table from a nuclei.parquet (or one shard's part)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def _features(table: pd.DataFrame, object_type: str) -> Iterable[str]:
    from wsi.qupath import QuPathObject, to_feature

    polygons = shapely.from_wkb(table["geometry"].to_numpy())
    values = table[list(MEASUREMENTS)].to_numpy(dtype=np.float64)
    for polygon, row, kind in zip(polygons, values, table["type"], strict=True):
        measurements = dict(zip(MEASUREMENTS, row.tolist(), strict=True))
        obj = QuPathObject(polygon, object_type=object_type, classification=kind or None,
                           measurements=measurements, nucleus=polygon if object_type == "cell" else None)  # fmt: skip
        yield json.dumps(to_feature(obj), separators=(",", ":"))


def write_geojson(path: str | Path, tables: Iterable[pd.DataFrame], object_type: str = "cell") -> int:
    """QuPath GeoJSON (gzip when the name ends in .gz) of nuclei tables, streamed; returns the feature count.

    Cells carry the nucleus as `nucleusGeometry` and, with no cell boundary found, as their geometry too;
    detections carry it as their geometry. The type is the classification; measurements as in the table.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    path = Path(path)
    count = 0
    with atomic_file(path) as tmp:
        tmp.chmod(0o644)  # mkstemp makes it private; results are for sharing
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.write('{"type":"FeatureCollection","features":[')
            for table in tables:
                for feature in _features(table, object_type):
                    f.write(("," if count else "") + feature)
                    count += 1
            f.write("]}")
    return count
