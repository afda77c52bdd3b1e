# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_install_args writes the guest's tier into its libvirt metadata, as execution_pool reads it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.kvmlab.host_resources.plugins.filter.virt_install import virt_install_args
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep

TIERS = {'gold': {'cpu_weight': 512, 'shares': 512}, 'silver': {'cpu_weight': 333, 'shares': 333}}
POOLS = {'host_reserved': '0-1', 'host_housekeeping': '0', 'host_emulator': '1', 'guest_domain': '2-7'}
GUEST = {'name': 'vm1', 'tier': 'Silver', 'vcpus': 2}


def test_metadata_edits_come_first_with_the_tier_key():
    args = virt_install_args(GUEST, TIERS, POOLS)
    assert args[:4] == ['--xml', './metadata/guest/tier=silver',
                        '--xml', './metadata/guest/@xmlns=%s' % ep.METADATA_NS]
    assert args[4:6] == ['--resource', 'partition=/machine/silver']


def test_metadata_can_be_left_out():
    args = virt_install_args(GUEST, TIERS, POOLS, tier_metadata=False)
    assert '--xml' not in args and args[0] == '--resource'


def test_the_element_virt_install_writes_is_the_one_execution_pool_reads():
    """What the two edits give, in the XML libvirt gets, parses back to the tier."""
    xml = ("<domain><name>vm1</name><metadata><guest xmlns=\"%s\"><tier>silver</tier></guest></metadata>"
           "</domain>" % ep.METADATA_NS)
    assert ep.parse_metadata(xml)['tier'] == 'silver'


@pytest.mark.skipif(shutil.which('virt-install') is None, reason='virt-install (Debian: virtinst) not installed')
def test_virt_install_writes_the_tier_metadata(tmp_path):
    kernel = tmp_path / 'kernel'
    kernel.write_bytes(b'\0' * 16)
    command = ['virt-install', '--connect', 'test:///default', '--name', 'vm1', '--memory', '64', '--vcpus', '2',
               '--boot', 'kernel=%s' % kernel, '--osinfo', 'detect=on,require=off', '--disk', 'none',
               '--network', 'none', '--graphics', 'none', '--print-xml', '--dry-run'
               ] + virt_install_args(GUEST, TIERS, POOLS)
    out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         env=dict(os.environ, HOME=str(tmp_path)), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert ep.parse_metadata(out.stdout)['tier'] == 'silver'
