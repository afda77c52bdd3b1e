"""host_lock as a module, in-process: argument checks, check mode, acquire / re-enter / release."""
import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _lock as lk
from ansible_collections.kvmlab.host_resources.plugins.modules import host_lock
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

TOKEN = 'unit-test-token-0123456789'


@pytest.fixture
def path(lock_path):
    return lock_path  # tests/unit/conftest.py: a holder left behind is stopped afterwards


def warnings(result, capsys=None):
    """The module's warnings: in its result, or shown on stderr when another test set up a controller display."""
    text = ' '.join(str(item.get('msg', item) if isinstance(item, dict) else item) for item in result.get('warnings', []))
    if capsys is not None:
        text += ' ' + capsys.readouterr().err
    return text


def call(check_mode=False, **args):
    return run_module(host_lock.main, args, check_mode=check_mode)


def test_short_token_and_missing_token_fail(path):
    assert call(path=path, token='short')['msg'] == 'token must have at least 16 characters (got 5)'
    assert 'token' in call(path=path, state='released')['msg']
    assert 'does not exist' in call(path='/nonexistent-dir/x.lock')['msg']
    assert call(path=path, token=TOKEN, timeout=-1)['msg'] == 'timeout must be 0 or more seconds (got -1)'
    assert call(path=path, token=TOKEN, max_hold=0)['msg'] == 'max_hold must be 1 or more seconds (got 0)'


def test_check_mode_takes_nothing(path):
    result = call(check_mode=True, path=path, token=TOKEN)
    assert result['would'] == 'acquire' and result['acquired'] is False and result['changed'] is False
    assert not os.path.exists(path)
    result = call(check_mode=True, path=path, token=TOKEN, state='released')
    assert result['would'] == 'nothing' and result['held'] is False


def test_acquire_reenter_release(path, capsys):
    first = call(path=path, token=TOKEN, owner='unit', watch_pid=os.getpid())
    assert first['acquired'] and not first.get('failed') and first['changed'] is False and first['depth'] == 1
    assert first['watch']['pid'] == os.getpid() and first['watch']['kind'] == 'given'
    holder = first['holder']
    assert lk.read_holder(path)['pid'] == holder['pid'] and holder['owner'] == 'unit'
    checked = call(check_mode=True, path=path, token=TOKEN)
    assert checked['would'] == 'reenter' and checked['depth'] == 0
    busy = call(check_mode=True, path=path, token='z' * 20)
    assert busy['would'] == 'wait' and busy['holder']['pid'] == holder['pid']
    assert 'holder pid %d' % holder['pid'] in warnings(busy, capsys)
    nested = call(path=path, token=TOKEN)
    assert nested['reentered'] and nested['depth'] == 2 and nested['would'] == 'reenter'
    refused = call(path=path, token='z' * 20, timeout=0)
    assert refused['failed'] and 'held by another run: holder pid %d' % holder['pid'] in refused['msg']
    inner = call(path=path, token=TOKEN, state='released')
    assert inner['would'] == 'leave' and inner['depth'] == 1 and not inner['released']
    outer = call(path=path, token=TOKEN, state='released')
    assert outer['would'] == 'release' and outer['released'] and outer['changed'] is False
    assert not lk.alive(holder['pid'], holder['starttime'])
    late = call(path=path, token=TOKEN, state='released')
    assert late['held'] is False and 'not held by this run' in warnings(late, capsys)


def test_generated_token_is_returned(path):
    result = call(path=path, watch_pid=0, max_hold=5)
    assert len(result['token']) == 32 and result['watch'] is None
    assert call(path=path, token=result['token'], state='released')['released']


def test_failed_prerequisites_take_no_lock(path, tmp_path):
    """prerequisites: checked first; a host that cannot be managed fails naming what is missing, unlocked."""
    result = call(path=path, token=TOKEN, prerequisites={'systemd': False, 'cgroup2': False, 'root_user': False,
                                                         'python_modules': ['kvmlab_no_such_module'],
                                                         'executables': ['kvmlab-no-such-command'],
                                                         'search_path': [str(tmp_path)]})
    assert result.get('failed') is True
    assert result['msg'].startswith('this host cannot be managed: ')
    assert 'kvmlab-no-such-command' in result['msg'] and 'kvmlab_no_such_module' in result['msg']
    assert result['acquired'] is False and lk.read_holder(path) is None
    assert len(result['missing']) == 2


def test_prerequisites_met_then_the_lock_and_the_packages_read(path, tmp_path):
    (tmp_path / 'tool').write_text('#!/bin/sh\n')
    (tmp_path / 'tool').chmod(0o755)
    result = call(path=path, token=TOKEN, installed=['kvmlab-surely-not-a-package'],
                  prerequisites={'systemd': False, 'cgroup2': False, 'root_user': False,
                                 'python_modules': ['json'], 'executables': ['tool'], 'search_path': [str(tmp_path)]})
    assert result.get('failed') is not True, result.get('msg')
    assert result['acquired'] is True and result['missing'] == []
    assert result['found']['executables'] == {'tool': str(tmp_path / 'tool')}
    assert result['not_installed'] == ['kvmlab-surely-not-a-package']
    assert call(path=path, token=TOKEN, state='released')['released'] is True
