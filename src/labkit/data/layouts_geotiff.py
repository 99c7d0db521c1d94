"""What a folder read by :mod:`labkit.data.geotiff_tree` holds, in words: the text a ``data_root`` error quotes
(``labkit.core.params.check_data_root``) for each data source laid out as a GeoTIFF tree."""

from __future__ import annotations

#: The tree :func:`labkit.data.geotiff_tree.load_geotiff_tree` reads.
GEOTIFF_TREE = (
    "DATA_ROOT/images/<name>.tif, DATA_ROOT/labels_noisy/<name>.tif, DATA_ROOT/labels_clean/<name>.tif "
    '(same names, same grid) and DATA_ROOT/legend.json ({"<label value>": "<class>"}) or legend.csv'
)

#: NoLDO-S12 placed in that tree (its published archives are not laid out so; the docs say how).
NOLDO_S12 = (
    "NoLDO-S12 (SSL4EO-S12@NoL noisy Dynamic World / OSM labels and SSL4EO-S12@DW exact labels; Liu et al., "
    "CromSS, IEEE TGRS 2025; published at https://huggingface.co/datasets/vikki23/NoLDO-S12, MIT, code at "
    "https://github.com/zhu-xlab/CromSS) in the geotiff layout: DATA_ROOT/images/<name>.tif (Sentinel-2 bands), "
    "DATA_ROOT/labels_noisy/<name>.tif (the NoL noisy labels), DATA_ROOT/labels_clean/<name>.tif (the DW exact "
    "labels, same grid) and DATA_ROOT/legend.json, placed from ssl4eo_s12_nol.zip / ssl4eo_s12_dw.zip (their "
    "inner layout is not documented and the noisy labels are on a coarser grid, which labkit never resamples: see "
    "docs/data/noisy_label_pretraining.md)"
)

#: data_source -> what its folder holds, for the sources read as a GeoTIFF tree.
LAYOUTS = {"geotiff": f"your own GeoTIFF tiles: {GEOTIFF_TREE}", "noldo_s12": NOLDO_S12}
