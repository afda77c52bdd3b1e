# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the fast libvirt tier: a private libvirtd per test session.

- ``fastvirt``: session-scoped :class:`fastvirt.FastVirt` (tools/fastvirt), daemon running;
  stopped (guests destroyed first) at the end of the session, and reaped by
  the next session if this one was killed.
- ``guests``: per-test factory ``guests(name, vcpus=..., iothreads=...)``
  returning the real domain name (prefixed so that concurrent sessions on
  one host never share cgroup names); every guest is removed after the test.
- ``pin``: runs the ``libvirt_pin`` module's ``main()`` in-process against
  the private daemon and returns its result dict.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, 'tools', 'fastvirt'))

import fastvirt as fvlib  # noqa: E402  pylint: disable=wrong-import-position


def _collection_importable():
    """Put the checkout on sys.path under its FQCN (link or a private symlink)."""
    try:
        import ansible_collections.kvmlab.host_resources  # noqa: F401  pylint: disable=unused-import
        return
    except ImportError:
        pass
    linked = os.path.join(REPO, '.build', 'collections')
    if os.path.realpath(os.path.join(linked, 'ansible_collections', 'kvmlab', 'host_resources')) == REPO:
        sys.path.insert(0, linked)
        return
    root = tempfile.mkdtemp(prefix='kvmlab-coll-')
    os.makedirs(os.path.join(root, 'ansible_collections', 'kvmlab'))
    os.symlink(REPO, os.path.join(root, 'ansible_collections', 'kvmlab', 'host_resources'))
    sys.path.insert(0, root)


_collection_importable()


def _skip_reason():
    missing = fvlib.missing_tools()
    if missing:
        return ('fast libvirt tier needs %s (Debian: make apt installs libvirt-daemon, '
                'libvirt-daemon-driver-qemu, qemu-system-x86, binutils)' % ', '.join(missing))
    if os.geteuid() != 0:
        return 'fast libvirt tier runs a private libvirtd in a mount namespace: needs root'
    return None


BASE = fvlib.default_base()


@pytest.fixture(scope='session')
def fastvirt_base():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    os.makedirs(BASE, exist_ok=True)
    fvlib.reap_stale(BASE)
    return BASE


@pytest.fixture(scope='session')
def fastvirt(fastvirt_base):  # pylint: disable=redefined-outer-name
    state_dir = tempfile.mkdtemp(prefix='s', dir=fastvirt_base)
    with open(os.path.join(state_dir, 'owner.pid'), 'w') as handle:
        handle.write('%d\n' % os.getpid())
    # the QEMU capabilities cache is shared: the first start probes ~5 s, later ones 0.3 s
    virt = fvlib.FastVirt(state_dir, cache_dir=os.path.join(fastvirt_base, 'cache'))
    try:
        virt.up()
        yield virt
    finally:
        virt.down()
        import shutil
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def guests(fastvirt):  # pylint: disable=redefined-outer-name
    token = uuid.uuid4().hex[:6]
    made = []

    def make(name, **spec):
        full = 'fv%s-%s' % (token, name)
        made.append(full)
        spec.setdefault('vcpus', 2)
        fastvirt.define_guest(full, **spec)
        return full

    yield make
    for full in made:
        fastvirt.remove_guest(full)


@pytest.fixture
def pin(fastvirt):  # pylint: disable=redefined-outer-name
    from ansible_collections.kvmlab.host_resources.plugins.modules import libvirt_pin
    from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

    def call(check_mode=False, diff=False, **args):
        args.setdefault('uri', fastvirt.uri)
        return run_module(libvirt_pin.main, args, check_mode=check_mode, diff=diff)

    return call
