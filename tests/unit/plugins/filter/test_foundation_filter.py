# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The foundation_slice_units filter: a thin face that names the variable in errors."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.filter.foundation import FilterModule


def test_units_for_tiers_and_host_slices():
    units = FilterModule().filters()['foundation_slice_units'](
        {'gold': {'slice': 'machine-gold.slice', 'cpu_weight': '512'}}, ['system.slice'], '0-1')
    assert units == [{'name': 'machine-gold.slice', 'cpu_weight': 512,
                      'description': 'kvmlab gold performance domain (gold)'},
                     {'name': 'system.slice', 'allowed_cpus': '0-1'}]


def test_error_names_the_variable():
    with pytest.raises(AnsibleFilterError,
                       match=r'foundation_slice_units \(lab_host_resource_management_tiers\): tier gold must be'):
        FilterModule().filters()['foundation_slice_units']({'gold': {}}, variable='lab_host_resource_management_tiers')
