# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: every task's per-host result and the stats, as JSON in a file.

ansible-core has no JSON stdout callback of its own (ansible.posix.json is a
separate collection); the packaging tests enable this aggregate callback with
ANSIBLE_CALLBACK_PLUGINS / ANSIBLE_CALLBACKS_ENABLED and read
KVMLAB_RESULTS_FILE afterwards.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: kvmlab_results
type: aggregate
short_description: write task results to a JSON file (tests only)
description:
  - Writes every task's per-host result and the play stats as JSON to the file named by C(KVMLAB_RESULTS_FILE).
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'kvmlab_results'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._tasks = []
        self._by_uuid = {}

    def _record(self, result, status):
        task = result._task
        entry = self._by_uuid.get(task._uuid)
        if entry is None:
            entry = {'name': task.get_name(), 'hosts': {}}
            self._by_uuid[task._uuid] = entry
            self._tasks.append(entry)
        data = dict(result._result)
        data['_status'] = status
        entry['hosts'][result._host.get_name()] = data

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        out = {'tasks': self._tasks, 'stats': dict((h, stats.summarize(h)) for h in hosts)}
        with open(os.environ['KVMLAB_RESULTS_FILE'], 'w') as handle:
            json.dump(out, handle, default=str)
