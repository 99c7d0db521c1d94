"""What a ``data_root`` folder of real micro-CT volumes holds, for each data source that
:mod:`labkit.data.microct_volumes` reads: the help text a study quotes when ``data_root`` is missing or wrong
(:func:`labkit.core.params.check_data_root`)."""

from __future__ import annotations

PAPER_DATA = (
    "the paper's data: Digital Rocks Portal project 317 ('Eleven Sandstones', Neumann et al., grey-scale and "
    "binary-segmented micro-CT volumes of eleven sandstones, of which the paper used ten; "
    "https://www.digitalrocksportal.org/projects/317) for rock-type classification and binary segmentation, and "
    "project 151 (three-phase segmented carbonate samples; https://www.digitalrocksportal.org/projects/151) for "
    "multi-class segmentation"
)
PAPER_LAYOUT = (
    "data_root/\n"
    "  317/<Sandstone>/<Prefix>_2d25um_grayscale.raw and <Prefix>_2d25um_binary.raw   (as published: 1000^3 "
    "uint8, e.g. 317/Bandera Brown/BanderaBrown_2d25um_grayscale.raw)\n"
    "  151/<Sample>_raw.raw (+ <Sample>_raw.raw_header or .mhd) with <Sample>_segmented.raw (+ header)\n"
    "  splits.yaml        optional: train_rocks, test_rock, train_scanners, test_scanner\n"
    "or any layout listed in data_root/manifest.yaml (data_source volumes; see docs/data/dinov2_microct.md)"
)
OWN_VOLUMES = (
    "your own volumes, listed in data_root/manifest.yaml (grey image file, label volume, rock, scanner, voxel size "
    "per volume)"
)
MANIFEST_LAYOUT = (
    "data_root/\n"
    "  manifest.yaml      splits: {train_rocks, test_rock, train_scanners, test_scanner}; "
    "volumes: [{name, image, labels, rock, scanner, voxel_size_um}, ...]\n"
    "  <image files>      TIFF stack (.tif), raw (.raw + .raw_header, or shape/dtype/byte order in the "
    "manifest), .mhd (+ .raw) or .mat\n"
    "  <label files>      the same formats, integer phases 0 pore, 1 mineral, 2 micro-porous"
)
#: data_source -> what its data_root holds (``volumes``: a manifest; ``drp317_151``: the Digital Rocks Portal layout)
LAYOUTS = {
    "volumes": f"{OWN_VOLUMES}. Expected layout:\n{MANIFEST_LAYOUT}",
    "drp317_151": f"{PAPER_DATA}. Download it. Expected layout:\n{PAPER_LAYOUT}",
}
