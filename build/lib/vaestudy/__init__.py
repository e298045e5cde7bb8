"""vaestudy: what p(x|z) should a VAE decoder be?"""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of the version: the package metadata (pyproject.toml)
    __version__ = version("vaestudy")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"
