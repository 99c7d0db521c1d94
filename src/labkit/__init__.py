"""labkit: a notebook-driven research kit for label-efficient computer vision.

Layers, lowest first (a layer never imports a higher one):
``core`` -> ``data`` -> ``models`` -> ``methods`` -> ``studies`` -> ``reports`` -> ``runner``/``cli``.
"""

__version__ = "0.1.0"

from labkit.core.params import Config, configure, list_specs, load_spec  # noqa: E402

__all__ = ["Config", "configure", "list_specs", "load_spec", "__version__"]
