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

    def _release_after_failure(self, lock, task_vars):
        """The entry point fails in this task (its always: section still releases; this covers callers without one)."""
        if lock is not None and not self._task.check_mode:
            self._call('kvmlab.host_resources.host_lock',
                       {'path': lock['path'], 'state': 'released', 'token': lock['token']}, task_vars)

    def _lock(self, lock, task_vars, result):
        """One host_lock call; False (and ``result`` failed) when it failed."""
        held = self._call('kvmlab.host_resources.host_lock', lock, task_vars)
        result['lock'] = held
        if held.get('failed'):
            result.update(failed=True, msg=held.get('msg', 'host_lock failed'))
            return False
        if held.get('warnings'):
            result.setdefault('warnings', []).extend(held['warnings'])
        return True

    def _acquire(self, conf, lock, task_vars, result):
        """The prerequisites and the lock: with the lock on, one host_lock call does both (and reads the packages)."""
        if lock is None:
            found = self._call('kvmlab.host_resources.host_prerequisites', guard.prerequisites_args(conf), task_vars)
            result['prerequisites'] = found
            if found.get('failed'):
                result.update(failed=True, msg=found.get('msg', 'host_prerequisites failed'))
                return False
            return True
        done = self._lock(lock, task_vars, result)
        held = result['lock']
        result['prerequisites'] = {'found': held.get('found'), 'missing': held.get('missing', [])}
        result['not_installed'] = held.get('not_installed')
        return done

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
        lock = guard.lock_args(conf, token, guard.controller_user())
        if conf['state'] == 'released':
            if lock is not None:
                self._lock(lock, task_vars, result)
        elif self._acquire(conf, lock, task_vars, result):
            install = guard.install_args(conf, self._task.check_mode, result.get('not_installed'))
            if install is not None:
                installed, failure = guard.install_packages(
                    lambda name, args: self._call(name, args, task_vars), install)
                result['packages'] = installed
                if failure:
                    result.update(failed=True, msg=failure)
                    self._release_after_failure(lock, task_vars)
                    return result
                result['changed'] = bool(installed.get('changed'))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
