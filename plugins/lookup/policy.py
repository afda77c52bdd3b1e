# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's built-in policy (vars/*.yml), for role defaults."""

from __future__ import annotations

DOCUMENTATION = r'''
name: policy
version_added: 0.2.0
short_description: The collection's built-in policy values
description:
  - Returns a value of the collection's built-in policy, kept once in the collection's
    C(vars/) directory (C(tiers.yml), C(host_pools.yml), C(memory_policy.yml)).
  - The roles use it only in their C(defaults/main.yml), behind the operator's own
    variable, so the built-in policy enters at role-default precedence and any
    inventory variable, role parameter or extra var wins over it.
  - It never reads the operator's files and never loads a playbook's vars_files.
author:
  - kvmlab maintainers (@kvmlab)
options:
  _terms:
    description: Names of policy variables, for example C(kvmlab_tiers).
    type: list
    elements: str
    required: true
'''

EXAMPLES = r'''
# roles/<role>/defaults/main.yml: the operator's kvmlab_tiers, else the built-in tiers
shared_execution_pool_tiers: "{{ kvmlab_tiers | default(lookup('kvmlab.host_resources.policy', 'kvmlab_tiers')) }}"
'''

RETURN = r'''
_raw:
  description: The values of the named policy variables, in order.
  type: list
  elements: raw
'''

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

# The collection's vars/ directory: plugins/lookup/policy.py -> ../../vars
POLICY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'vars')
# Files of built-in policy; the example guest lists in vars/ are not policy.
POLICY_FILES = ('tiers.yml', 'host_pools.yml', 'memory_policy.yml')


def load_policy(directory=POLICY_DIR, files=POLICY_FILES):
    """Every policy variable of the collection, by name; a name set twice is an error."""
    policy = {}
    for name in files:
        path = os.path.join(directory, name)
        try:
            with open(path) as handle:
                data = yaml.safe_load(handle) or {}
        except (IOError, OSError) as exc:
            raise AnsibleLookupError('policy: cannot read %s: %s' % (path, exc))
        except yaml.YAMLError as exc:
            raise AnsibleLookupError('policy: %s is not valid YAML: %s' % (path, exc))
        if not isinstance(data, dict):
            raise AnsibleLookupError('policy: %s must hold a mapping of variables' % path)
        for key, value in data.items():
            if key in policy:
                raise AnsibleLookupError('policy: %s is set in two policy files' % key)
            policy[key] = value
    return policy


class LookupModule(LookupBase):
    """lookup('kvmlab.host_resources.policy', 'kvmlab_tiers')."""

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if yaml is None:
            raise AnsibleLookupError('policy: PyYAML is required')
        policy = load_policy()
        values = []
        for term in terms:
            if term not in policy:
                raise AnsibleLookupError('policy: no built-in policy variable %r (known: %s)'
                                         % (term, ', '.join(sorted(policy))))
            values.append(policy[term])
        return values
