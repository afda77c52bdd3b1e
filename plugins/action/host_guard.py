# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_guard: prerequisites, packages and the host lock of an entry point in one task (see the module's docs)."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.kvmlab.host_resources.plugins.plugin_utils import _host_guard as guard


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(guard.ARGUMENTS)

    def _call(self, name, args, task_vars):
        return self._execute_module(module_name=name, module_args=args, task_vars=task_vars)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        try:
            conf = guard.settings(self._task.args, task_vars)
        except guard.GuardError as exc:
            result.update(failed=True, msg='host_guard: %s' % exc)
            return result
        result.update(changed=False, state=conf['state'])
        token = guard.run_token(os.getppid())
        if conf['state'] == 'acquired':
            # inputs were templated with the task's arguments: a bad one has failed already
            found = self._call('kvmlab.host_resources.host_prerequisites', guard.prerequisites_args(conf), task_vars)
            result['prerequisites'] = found
            if found.get('failed'):
                result.update(failed=True, msg=found.get('msg', 'host_prerequisites failed'))
                return result
            install = guard.install_args(conf, self._task.check_mode)
            if install is not None:
                installed = self._call('ansible.builtin.apt', install, task_vars)
                result['packages'] = installed
                if installed.get('failed'):
                    result.update(failed=True, msg='cannot install %s: %s'
                                  % (', '.join(conf['packages']), installed.get('msg', 'package failed')))
                    return result
                result['changed'] = bool(installed.get('changed'))
        lock = guard.lock_args(conf, token, guard.controller_user())
        if lock is not None:
            held = self._call('kvmlab.host_resources.host_lock', lock, task_vars)
            result['lock'] = held
            if held.get('failed'):
                result.update(failed=True, msg=held.get('msg', 'host_lock failed'))
                return result
            if held.get('warnings'):
                result.setdefault('warnings', []).extend(held['warnings'])
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
