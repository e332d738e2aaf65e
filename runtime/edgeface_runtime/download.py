"""Checksum-verified, resumable downloads into edgeface's cache.

The runtime fetches its detector this way, and the training side its datasets and weights, so
one cache (``$EDGEFACE_CACHE``), one mirror setting (``$EDGEFACE_MIRRORS``) and one rule (a file
is used only once its checksum matched) hold for every file edgeface downloads. Nothing here
touches the network until a function is called.
"""

from ._download import (CACHE_ENV, MIRRORS_ENV, FetchedFile, Progress, cached_download, default_cache_dir,
                        default_detector_path, fetch_file, find_cached, mirror_urls, sha256_of)

__all__ = ["CACHE_ENV", "MIRRORS_ENV", "FetchedFile", "Progress", "cached_download", "default_cache_dir",
           "default_detector_path", "fetch_file", "find_cached", "mirror_urls", "sha256_of"]
