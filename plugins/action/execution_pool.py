# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""execution_pool: the module, guarded in its own call (see the module's O(guard)).

The guard's settings and the run's lock token are resolved here, on the
controller, as for host_guard; the module checks the prerequisites and holds
the lock on the host for the call. When packages are missing and this run
installs them, the module stops before it changes anything, apt installs
them, and the module is called again.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.kvmlab.host_resources.plugins.plugin_utils import _host_guard as guard

MODULE = 'kvmlab.host_resources.execution_pool'


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def _call(self, name, args, task_vars):
        return self._execute_module(module_name=name, module_args=args, task_vars=task_vars)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        spec = args.get('guard')
        conf = None
        if spec is not None:
            if not isinstance(spec, dict):
                result.update(failed=True, msg='execution_pool: guard must be a dict, got %s' % type(spec).__name__)
                return result
            try:
                conf = guard.settings(dict(spec, state='acquired'), task_vars)
            except guard.GuardError as exc:
                result.update(failed=True, msg='execution_pool: guard: %s' % exc)
                return result
            args['guard'] = guard.module_guard(conf, guard.run_token(os.getppid()), guard.controller_user(),
                                               self._task.check_mode)
        if conf is None:
            out = self._call(MODULE, args, task_vars)
        else:
            out = guard.run_guarded(lambda name, margs: self._call(name, margs, task_vars), MODULE, args, conf,
                                    self._task.check_mode)
        result.update(out)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
