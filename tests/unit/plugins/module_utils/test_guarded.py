"""_guarded: a module's own guard (prerequisites, packages dpkg lacks, the run's host lock), rule by rule, on real locks."""
import os
import signal

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _guarded as gd
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _lock as lk

TOKEN = 'unit-test-guard-token-0123'
MET = {'systemd': False, 'cgroup2': False, 'root_user': False, 'python_modules': ['json']}


@pytest.fixture
def path(lock_path):
    return lock_path  # tests/unit/conftest.py: a holder left behind is stopped afterwards


def guard(path, **extra):
    return dict({'prerequisites': MET, 'installed': [], 'path': path, 'token': TOKEN, 'owner': 'unit',
                 'timeout': 0, 'max_hold': 60}, **extra)


def test_check_guard_names_each_problem(path):
    assert gd.check_guard(guard(path)) is None
    assert gd.check_guard({'prerequisites': MET}) is None  # the lock off: no path, no token needed
    assert gd.check_guard([]) == 'guard must be a dict, got list'
    assert gd.check_guard(dict(guard(path), state='acquired')) == 'guard has unknown key(s) state'
    assert gd.check_guard(guard(path, token='short')) == 'guard token must have at least 16 characters (got 5)'
    assert gd.check_guard(guard('/nonexistent-dir/x.lock')) == 'directory of the lock file /nonexistent-dir/x.lock does not exist'
    assert gd.check_guard(guard(path, timeout=-1)) == 'timeout must be 0 or more seconds (got -1)'
    assert gd.check_guard(guard(path, max_hold=0)) == 'max_hold must be 1 or more seconds (got 0)'
    no_times = dict(guard(path))
    del no_times['timeout'], no_times['max_hold']
    assert gd.check_guard(no_times) == 'guard with a lock path lacks timeout, max_hold (whole seconds)'


def test_a_host_that_cannot_be_managed_fails_before_the_lock(path):
    with pytest.raises(gd.GuardFailed) as failed:
        gd.enter(guard(path, prerequisites=dict(MET, python_modules=['kvmlab_no_such_module'])), False, print)
    assert str(failed.value).startswith('this host cannot be managed: ') and 'kvmlab_no_such_module' in str(failed.value)
    assert failed.value.result['lock'] is None and lk.read_holder(path) is None and not os.path.exists(path)


def test_packages_to_install_stop_before_the_lock(path):
    entered = gd.enter(guard(path, installed=['kvmlab-surely-not-a-package']), False, print)
    assert entered['not_installed'] == ['kvmlab-surely-not-a-package']
    assert entered['lock'] is None and lk.read_holder(path) is None
    assert gd.leave(guard(path), entered, print) is None


def test_enter_takes_the_lock_for_the_call_and_leave_frees_it(path):
    entered = gd.enter(guard(path), False, print)
    lock = entered['lock']
    assert lock['acquired'] is True and lock['depth'] == 1 and lock['would'] == 'acquire'
    holder = lk.read_holder(path)
    assert holder['pid'] == lock['holder']['pid'] and holder['owner'] == 'unit'
    with pytest.raises(gd.GuardFailed) as busy:  # another run waits (timeout 0) and fails naming the holder
        gd.enter(guard(path, token='another-run-token-0123456'), False, print)
    assert 'pid %d' % holder['pid'] in str(busy.value) and busy.value.result['lock']['holder']['pid'] == holder['pid']
    done = gd.leave(guard(path), entered, print)
    assert done['released'] is True and done['depth'] == 0
    assert lk.read_holder(path) is None and not lk.alive(holder['pid'], holder['starttime'])


def test_inside_an_entry_point_that_holds_the_run_lock_it_reenters_and_leaves_it_held(path):
    outer = lk.acquire(path, TOKEN, 'outer entry point', 5, 60, None)
    try:
        entered = gd.enter(guard(path), False, print)
        assert entered['lock']['reentered'] is True and entered['lock']['depth'] == 2
        done = gd.leave(guard(path), entered, print)
        assert done['released'] is False and done['depth'] == 1
        assert lk.read_holder(path)['pid'] == outer['holder']['pid']
    finally:
        assert lk.release(path, TOKEN)['released'] is True


def test_check_mode_takes_no_lock_and_says_what_would_happen(path):
    warned = []
    entered = gd.enter(guard(path), True, warned.append)
    assert entered['lock'] == {'would': 'acquire', 'holder': None, 'reentered': False}
    assert not os.path.exists(path) and gd.leave(guard(path), entered, warned.append) is None
    held = lk.acquire(path, 'another-run-token-0123456', 'other', 5, 60, None)
    try:
        entered = gd.enter(guard(path), True, warned.append)
        assert entered['lock']['would'] == 'wait' and entered['lock']['holder']['pid'] == held['holder']['pid']
        assert 'held by another run (holder pid %d)' % held['holder']['pid'] in warned[-1]
    finally:
        lk.release(path, 'another-run-token-0123456')


def test_the_lock_off_checks_the_prerequisites_only(path):
    entered = gd.enter({'prerequisites': MET, 'installed': []}, False, print)
    assert entered['lock'] is None and entered['missing'] == [] and not os.path.exists(path)
    assert gd.leave({'prerequisites': MET}, entered, print) is None


def test_a_holder_gone_before_the_release_warns(path):
    entered = gd.enter(guard(path), False, print)
    holder = entered['lock']['holder']
    os.kill(holder['pid'], signal.SIGTERM)
    lk.wait_gone(holder['pid'], holder['starttime'])
    warned = []
    done = gd.leave(guard(path), entered, warned.append)
    assert done['held'] is False and warned == [gd.not_held_warning(path)]
