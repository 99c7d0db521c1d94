"""What each real SAR scene source's ``data_root`` folder holds, as the help text ``core.params.check_data_root``
quotes: the folder layout ``data.sar`` reads (:func:`labkit.data.sar.describe_layout`) and where the dataset is
published."""

from __future__ import annotations

from labkit.data import sar

PUBLISHED = {
    "extremeearth": sar.EXTREMEEARTH_PUBLISHED,
    "ai4arctic": sar.AI4ARCTIC_PUBLISHED,
    "geotiff": "your own dual-polarisation scenes",
}


def sar_layouts(docs: str | None = None) -> dict[str, str]:
    """``{data_source: help text}`` for every real source of ``data.sar.DATA_SOURCES`` (``docs``: a page to see)."""
    return {
        source: f"a folder laid out as\n{sar.describe_layout(source).format(data_root='<data_root>')}\n"
        f"Dataset: {PUBLISHED[source]}" + (f" (see {docs})" if docs else "")
        for source in sar.DATA_SOURCES
        if source != "simulated"
    }
