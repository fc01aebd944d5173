"""Imports the `imagecorruptions` package (dev extra) under today's numpy / scipy / scikit-image.

The package (1.1.2, 2019) imports `pkg_resources`, `scipy.ndimage.interpolation` and uses
`np.float_` and skimage's removed `multichannel=` argument; small stand-ins are installed for the
missing names before it is imported. Returns None when the package is not installed.
"""

import importlib.util
import pathlib
import sys
import types

import numpy as np


def load():
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None:
        return None
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda module, name: str(pathlib.Path(sys.modules[module].__file__).parent / name)
            sys.modules["pkg_resources"] = shim
    import scipy.ndimage

    if "scipy.ndimage.interpolation" not in sys.modules:
        interp = types.ModuleType("scipy.ndimage.interpolation")
        interp.map_coordinates = scipy.ndimage.map_coordinates
        sys.modules["scipy.ndimage.interpolation"] = interp
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    import skimage.filters
    from imagecorruptions import corruptions as ic

    def gaussian(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return skimage.filters.gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian
    if isinstance(sys.modules.get("pkg_resources"), types.ModuleType) and not hasattr(
        sys.modules["pkg_resources"], "fixup_namespace_packages"
    ):
        # The stand-in served the package's import only; other code (pytest's monkeypatch) expects the
        # real pkg_resources or none.
        del sys.modules["pkg_resources"]
    return imagecorruptions
