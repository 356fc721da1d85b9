"""astro3s: automatic segmentation of astrocytes in two-photon calcium-imaging movies.

The package follows the ASTRA method (Bonato et al. 2023, bioRxiv
10.1101/2023.05.03.539211). Sub-packages are imported lazily by the user; this
module does no work at import time.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
