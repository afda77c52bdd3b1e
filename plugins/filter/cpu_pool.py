# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the cpu_pool role; thin faces of module_utils._cpupool."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpupool as cp


def _call(name, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except cp.CpuPoolError as exc:
        raise AnsibleFilterError('%s: %s' % (name, exc))


def cpu_pool_membership(groups, prefix, hosts, slurped=None, leave=None):
    """Inventory pool, recorded pool and membership state of every host of the play."""
    return _call('cpu_pool_membership', cp.memberships, groups, prefix, hosts, slurped, leave)


def cpu_pool_plan(membership, action, name=''):
    """The pools an action works on, their members, refusals and notes."""
    return _call('cpu_pool_plan', cp.plan, membership, action, name or '')


def cpu_pool_models(results):
    """``{pool: baseline}`` of the pool model loop's registered results."""
    return _call('cpu_pool_models', cp.models_by_pool, results)[0]


def cpu_pool_checks(model_xml, members, guests):
    """The CPUs to compare on every member of a pool: the model and each guest's."""
    return _call('cpu_pool_checks', cp.pool_checks, model_xml, members, guests)


def cpu_pool_record(model, pool, members, host, host_cpu, schema=cp.RECORD_SCHEMA):
    """The pool record a member keeps (the kvmlab_cpu_pool local fact)."""
    return _call('cpu_pool_record', cp.pool_record, model, pool, members, host, host_cpu, schema)


def cpu_pool_report(plan, membership, baselines, guests=None, fits=None, restored=None, host_cpus=None,
                    check_mode=False):
    """The report of a run (stat, or join, move, recalc and leave)."""
    return _call('cpu_pool_report', cp.report, plan, membership, baselines, guests, fits, restored, host_cpus,
                 check_mode)


def cpu_pool_summary(report):
    """The readable lines of a cpu_pool report."""
    if not isinstance(report, dict) or 'action' not in report:
        raise AnsibleFilterError('cpu_pool_summary: expects a report of cpu_pool_report')
    return cp.summary(report)


class FilterModule(object):
    """kvmlab.host_resources CPU pool filters."""

    def filters(self):
        return {
            'cpu_pool_membership': cpu_pool_membership,
            'cpu_pool_plan': cpu_pool_plan,
            'cpu_pool_models': cpu_pool_models,
            'cpu_pool_checks': cpu_pool_checks,
            'cpu_pool_record': cpu_pool_record,
            'cpu_pool_report': cpu_pool_report,
            'cpu_pool_summary': cpu_pool_summary,
        }
