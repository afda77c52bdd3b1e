"""Make the collection importable by its FQCN when pytest runs from the repo.

Under ``ansible-test units`` the collection already sits at
``ansible_collections/kvmlab/host_resources``; from a plain checkout the
``make collection-link`` symlink under ``.build/collections`` provides it.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
_LINKED = os.path.join(_ROOT, '.build', 'collections')

try:
    import ansible_collections.kvmlab.host_resources  # noqa: F401  pylint: disable=unused-import
except ImportError:
    if os.path.isdir(_LINKED):
        sys.path.insert(0, _LINKED)
