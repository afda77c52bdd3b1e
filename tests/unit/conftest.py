"""Make the collection importable by its FQCN when pytest runs from the repo.

Under ``ansible-test units`` the collection already sits at
``ansible_collections/kvmlab/host_resources``; from a plain checkout the
``make collection-link`` symlink under ``.build/collections`` provides it.
"""
import os
import signal
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
_LINKED = os.path.join(_ROOT, '.build', 'collections')

try:
    import ansible_collections.kvmlab.host_resources  # noqa: F401  pylint: disable=unused-import
except ImportError:
    if os.path.isdir(_LINKED):
        sys.path.insert(0, _LINKED)


@pytest.fixture
def lock_path(tmp_path):
    """A host lock file under tmp_path; a holder a test left behind is stopped by its pid afterwards."""
    from ansible_collections.kvmlab.host_resources.plugins.module_utils import _lock  # after the path is set up
    path = str(tmp_path / 'host.lock')
    yield path
    record = _lock.read_holder(path)
    if record:
        os.kill(record['pid'], signal.SIGTERM)
        _lock.wait_gone(record['pid'], record['starttime'])
