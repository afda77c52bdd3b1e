import base64
import json
import os
import stat

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils._snapshot import SnapshotError


def b64(text):
    return base64.b64encode(text.encode()).decode()


class FakeStat(object):
    def __init__(self, mode):
        self.st_mode = mode


def sample(layer='memory'):
    data = snap.new_snapshot(layer, host='lab', created='2024-05-01T10:00:00Z')
    snap.record_file(data, '/etc/a.conf', FakeStat(stat.S_IFREG | 0o640), b'x=1\n', 'root', 'adm')
    snap.record_file(data, '/etc/new.conf', None, None)
    snap.record_dir(data, '/etc/d', FakeStat(stat.S_IFDIR | 0o755), 'root', 'root')
    snap.record_dir(data, '/etc/made', None)
    data['values'] = {'thp': {'enabled': 'madvise'}}
    return data


# -- schema and version ------------------------------------------------------

def test_new_snapshot_schema():
    data = snap.new_snapshot('memory', host='lab', created='2024-05-01T10:00:00Z')
    assert data == {'schema': 'kvmlab.host_resources/snapshot', 'version': 2, 'layer': 'memory',
                    'created': '2024-05-01T10:00:00Z', 'host': 'lab', 'files': {}, 'dirs': {}, 'values': {}}


def test_new_snapshot_created_defaults_to_utc_now():
    created = snap.new_snapshot('memory')['created']
    assert created.endswith('Z') and len(created) == len('2024-05-01T10:00:00Z')


def test_bad_layer_name():
    with pytest.raises(SnapshotError, match='bad layer name'):
        snap.new_snapshot('Memory Layer')


def test_records():
    data = sample()
    assert data['files']['/etc/a.conf'] == {'exists': True, 'mode': '0640', 'owner': 'root', 'group': 'adm',
                                            'content_b64': b64('x=1\n')}
    assert data['files']['/etc/new.conf'] == {'exists': False}
    assert data['dirs']['/etc/d'] == {'exists': True, 'mode': '0755', 'owner': 'root', 'group': 'root'}
    assert data['dirs']['/etc/made'] == {'exists': False}
    assert snap.file_content(data['files']['/etc/a.conf']) == b'x=1\n'
    assert snap.file_content(data['files']['/etc/new.conf']) is None


def test_validate_roundtrip_text_and_bytes():
    data = sample()
    assert snap.validate(snap.dumps(data), '/s.json') == data
    assert snap.validate(snap.dumps(data).encode(), '/s.json', layer='memory') == data


def test_validate_other_version():
    data = sample()
    data['version'] = 3
    with pytest.raises(SnapshotError, match=r'^/s.json: snapshot schema version 3 is not supported'):
        snap.validate(data, '/s.json')


@pytest.mark.parametrize('text, problem', [
    ('', 'empty file'),
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "fi', 'truncated'),
    ('{"schema": "kvmlab.host_resources/snapshot",\n', 'truncated'),
    ('hello world', 'not JSON'),
    ('{"a": 1}}', 'not JSON'),
    ('{"a": tru}', 'not JSON'),
    (b'\xff\xfe{}', 'not JSON'),
    ('[1, 2]', 'not a kvmlab.host_resources snapshot'),
    ('{"name": "something else"}', 'not a kvmlab.host_resources snapshot'),
    ('{"schema": "other/thing", "version": 2}', "schema 'other/thing'"),
    ('{"format": 7, "live": {}, "files": {}}', 'unsupported memory_oversub snapshot format 7'),
    ('{"version": 1, "role": "nginx"}', "unknown role 'nginx'"),
])
def test_bad_files_name_path_and_problem(text, problem):
    with pytest.raises(SnapshotError) as err:
        snap.validate(text, '/var/lib/kvmlab/snapshots/memory.json')
    assert str(err.value).startswith('/var/lib/kvmlab/snapshots/memory.json: ')
    assert problem in str(err.value)


def test_foreign_layer():
    with pytest.raises(SnapshotError, match=r'^/s.json: a snapshot of the memory layer, not of contention$'):
        snap.validate(sample(), '/s.json', layer='contention')


@pytest.mark.parametrize('mutate, problem', [
    (lambda d: d.update(files=[]), '"files" must be a mapping'),
    (lambda d: d['files'].update({'rel/path': {'exists': False}}), 'files[rel/path]: not an absolute path'),
    (lambda d: d['files'].update({'/x': {'mode': '0644'}}), 'files[/x]: a record needs "exists"'),
    (lambda d: d['files']['/etc/a.conf'].update(mode='rw-r--r--'), "bad mode 'rw-r--r--'"),
    (lambda d: d['files']['/etc/a.conf'].update(mode=420), 'bad mode 420'),
    (lambda d: d['files']['/etc/a.conf'].pop('content_b64'), '"content_b64" is missing'),
    (lambda d: d['files']['/etc/a.conf'].update(content_b64='not base64!'), 'is not base64'),
    (lambda d: d['files']['/etc/a.conf'].update(owner=0), 'owner/group must be a name'),
    (lambda d: d['dirs'].update({'/y': True}), 'dirs[/y]: a record needs "exists"'),
    (lambda d: d.update(values=[1]), '"values" must be a mapping'),
    (lambda d: d.pop('layer'), '"layer" is missing'),
    (lambda d: d.update(created=5), '"created" must be text'),
])
def test_bad_records(mutate, problem):
    data = sample()
    mutate(data)
    with pytest.raises(SnapshotError) as err:
        snap.validate(json.loads(json.dumps(data)), '/s.json')
    assert str(err.value).startswith('/s.json: ')
    assert problem in str(err.value)


# -- migrate() from release 1 -------------------------------------------------

MEMORY_V1 = {
    'format': 1,
    'module': 'kvmlab.host_resources.memory_oversub',
    'taken_at': '2024-04-01T08:00:00Z',
    'live': {'thp': {'enabled': 'always'}, 'ksm': {'run': '0'}, 'sysctl': {'vm.swappiness': '60'},
             'zram': {'loaded': False, 'devices': {}}, 'swaps': []},
    'files': {
        '/etc/systemd/zram-generator.conf': {'exists': False, 'content': None, 'mode': None},
        '/etc/sysctl.d/90-kvmlab.conf': {'exists': True, 'content': 'vm.swappiness = 10\n', 'mode': '0640'},
    },
    'dirs': {'/etc/systemd': True, '/etc/tmpfiles.d': False},
    'zram_generator_installed': True,
    'snapshot_dir_created': '/var/lib/kvmlab/snapshots',
}


def test_migrate_memory_format_1():
    new = snap.validate(json.dumps(MEMORY_V1), '/s.json', layer='memory')
    assert new['schema'] == snap.SCHEMA and new['version'] == 2 and new['layer'] == 'memory'
    assert new['created'] == '2024-04-01T08:00:00Z'
    assert new['files']['/etc/systemd/zram-generator.conf'] == {'exists': False}
    assert new['files']['/etc/sysctl.d/90-kvmlab.conf'] == {
        'exists': True, 'mode': '0640', 'owner': None, 'group': None, 'content_b64': b64('vm.swappiness = 10\n')}
    assert new['dirs'] == {'/etc/systemd': {'exists': True, 'mode': None, 'owner': None, 'group': None},
                           '/etc/tmpfiles.d': {'exists': False},
                           '/var/lib/kvmlab/snapshots': {'exists': False}}
    assert new['values']['thp'] == {'enabled': 'always'}
    assert new['values']['sysctl'] == {'vm.swappiness': '60'}
    assert new['values']['zram_generator_installed'] is True
    assert new['migrated_from'] == 'memory_oversub format 1'


def test_migrate_memory_without_live_fails():
    data = dict(MEMORY_V1)
    del data['live']
    with pytest.raises(SnapshotError, match=r'^/s.json: memory_oversub snapshot \(format 1\) without'):
        snap.validate(data, '/s.json')


def test_migrate_memory_is_the_memory_layer_only():
    with pytest.raises(SnapshotError, match='a snapshot of the memory layer, not of contention'):
        snap.validate(dict(MEMORY_V1), '/s.json', layer='contention')


FOUNDATION_V1 = {
    'version': 1,
    'role': 'lab_host_resource_management',
    'pid1_cpus_allowed': '0-7',
    'online_cpus': '0-7',
    'files': {
        '/etc/systemd/system.conf.d/50-kvmlab.conf': {'exists': False, 'mode': None, 'owner': None,
                                                      'group': None, 'content': None},
        '/etc/systemd/system/tier.slice': {'exists': True, 'mode': '0644', 'owner': 'root', 'group': 'root',
                                           'content': b64('[Slice]\n')},
    },
    'dirs': {'/etc/systemd/system.conf.d': False, '/etc/systemd/system': True},
    'slices': ['tier-gold.slice'],
}


def test_migrate_foundation_version_1():
    new = snap.validate(json.dumps(FOUNDATION_V1), '/f.json', layer='host_resource_management')
    assert new['layer'] == 'host_resource_management'
    assert new['files']['/etc/systemd/system.conf.d/50-kvmlab.conf'] == {'exists': False}
    assert new['files']['/etc/systemd/system/tier.slice'] == {
        'exists': True, 'mode': '0644', 'owner': 'root', 'group': 'root', 'content_b64': b64('[Slice]\n')}
    assert new['dirs']['/etc/systemd/system.conf.d'] == {'exists': False}
    assert new['dirs']['/etc/systemd/system']['exists'] is True
    assert new['values'] == {'pid1_cpus_allowed': '0-7', 'online_cpus': '0-7', 'slices': ['tier-gold.slice']}


POOL_V1 = {
    'version': 1, 'role': 'shared_execution_pool', 'kind': 'apply', 'uri': 'qemu:///system',
    'guests': ['g1'], 'domains': [{'name': 'g1', 'scope': 'live', 'cpu_shares': 1024}],
    'scopes': [{'guest': 'g1', 'unit': 'machine-qemu-1-g1.scope', 'properties': {'AllowedCPUs': ''}}],
}


def test_migrate_shared_execution_pool_version_1():
    new = snap.validate(json.dumps(POOL_V1), '/p.json', layer='shared_execution_pool')
    assert new['files'] == {} and new['dirs'] == {}
    assert new['values'] == {'kind': 'apply', 'uri': 'qemu:///system', 'guests': ['g1'],
                             'domains': POOL_V1['domains'], 'scopes': POOL_V1['scopes']}


def test_migrate_current_is_unchanged():
    data = sample()
    assert snap.migrate(data, '/s.json') is data


def test_migrated_role_file_with_bad_base64_fails():
    data = json.loads(json.dumps(FOUNDATION_V1))
    data['files']['/etc/systemd/system/tier.slice']['content'] = '***'
    with pytest.raises(SnapshotError, match=r'^/f.json: files\[/etc/systemd/system/tier.slice\]: "content_b64" is not'):
        snap.validate(data, '/f.json')


# -- restore plans (pure data) ------------------------------------------------

def rec(content, mode='0644', owner='root', group='root'):
    return {'exists': True, 'mode': mode, 'owner': owner, 'group': group, 'content_b64': b64(content)}


def test_file_plan_rules():
    data = snap.new_snapshot('memory', created='x')
    data['files'] = {
        '/a': rec('same\n'),
        '/b': rec('old\n'),
        '/c': {'exists': False},
        '/d': {'exists': False},
        '/e': rec('gone\n', mode='0600'),
        '/f': rec('m\n', mode='0640'),
        '/g': rec('o\n', owner='root', group='adm'),
        '/h': rec('unknown owner\n', owner=None, group=None),
    }
    current = {
        '/a': rec('same\n'),
        '/b': rec('new\n'),
        '/c': rec('made by apply\n'),
        '/d': {'exists': False},
        '/f': rec('m\n', mode='0644'),
        '/g': rec('o\n', owner='root', group='root'),
        '/h': rec('unknown owner\n', owner='nobody', group='nogroup'),
    }
    plan = snap.file_restore_plan(data, current)
    assert plan == [
        {'action': 'keep', 'path': '/a'},
        {'action': 'write', 'path': '/b', 'content_b64': b64('old\n'), 'mode': '0644', 'owner': 'root',
         'group': 'root', 'changed': ['content']},
        {'action': 'remove', 'path': '/c'},
        {'action': 'keep', 'path': '/d'},
        {'action': 'write', 'path': '/e', 'content_b64': b64('gone\n'), 'mode': '0600', 'owner': 'root',
         'group': 'root', 'changed': ['exists']},
        {'action': 'write', 'path': '/f', 'content_b64': b64('m\n'), 'mode': '0640', 'owner': 'root',
         'group': 'root', 'changed': ['mode']},
        {'action': 'write', 'path': '/g', 'content_b64': b64('o\n'), 'mode': '0644', 'owner': 'root',
         'group': 'adm', 'changed': ['group']},
        {'action': 'keep', 'path': '/h'},
    ]
    assert snap.plan_changes(plan) == ['/b', '/c', '/e', '/f', '/g']


def test_dir_plan_removes_only_made_dirs_deepest_first():
    data = snap.new_snapshot('memory', created='x')
    data['dirs'] = {
        '/etc/kvmlab': {'exists': False},
        '/etc/kvmlab/a/b': {'exists': False},
        '/etc/kvmlab/a': {'exists': False},
        '/etc/systemd': {'exists': True, 'mode': '0755', 'owner': 'root', 'group': 'root'},
        '/etc/never': {'exists': False},
    }
    current = {'/etc/kvmlab': {'exists': True}, '/etc/kvmlab/a': {'exists': True},
               '/etc/kvmlab/a/b': {'exists': True}, '/etc/systemd': {'exists': True}}
    assert snap.dir_restore_plan(data, current) == [
        {'action': 'rmdir_if_empty', 'path': '/etc/kvmlab/a/b'},
        {'action': 'rmdir_if_empty', 'path': '/etc/kvmlab/a'},
        {'action': 'rmdir_if_empty', 'path': '/etc/kvmlab'},
        {'action': 'keep', 'path': '/etc/never'},
        {'action': 'keep', 'path': '/etc/systemd'},
    ]


# -- I/O: capture, save/load, apply ------------------------------------------

def test_capture_and_restore_on_disk(tmp_path):
    conf = tmp_path / 'etc' / 'a.conf'
    conf.parent.mkdir()
    conf.write_text('orig\n')
    os.chmod(str(conf), 0o640)
    made = tmp_path / 'etc' / 'made'
    new = made / 'new.conf'
    data = snap.capture('memory', files=[str(conf), str(new)], dirs=[str(made)], values={'k': 1}, host='h')
    assert data['files'][str(conf)]['mode'] == '0640'
    assert data['files'][str(new)] == {'exists': False}
    assert data['dirs'][str(made)] == {'exists': False}
    assert data['values'] == {'k': 1}

    # the apply changes things
    conf.write_text('changed\n')
    os.chmod(str(conf), 0o644)
    made.mkdir()
    new.write_text('new\n')

    files, dirs = snap.read_current(data)
    plan = snap.file_restore_plan(data, files)
    assert [a['action'] for a in plan] == ['write', 'remove']
    assert plan[0]['changed'] == ['content', 'mode']
    assert snap.apply_file_plan(plan) == [str(conf), str(new)]
    assert snap.apply_dir_plan(snap.dir_restore_plan(data, dirs)) == [str(made)]
    assert conf.read_text() == 'orig\n'
    assert stat.S_IMODE(os.stat(str(conf)).st_mode) == 0o640
    assert not made.exists()
    # nothing left over from the atomic write, and a second restore changes nothing
    assert sorted(os.listdir(str(conf.parent))) == ['a.conf']
    files, dirs = snap.read_current(data)
    assert snap.plan_changes(snap.file_restore_plan(data, files), snap.dir_restore_plan(data, dirs)) == []


def test_dir_not_empty_stays(tmp_path):
    made = tmp_path / 'made'
    made.mkdir()
    (made / 'other').write_text('someone else\n')
    assert snap.apply_dir_plan([{'action': 'rmdir_if_empty', 'path': str(made)}]) == []
    assert made.is_dir()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / 'f'
    target.write_text('old\n')

    def broken(src, dst):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'rename', broken)
    with pytest.raises(SnapshotError, match=r'f: cannot write: No space left on device'):
        snap.write_atomic(str(target), b'new\n')
    assert target.read_text() == 'old\n'
    assert os.listdir(str(tmp_path)) == ['f']


def test_save_modes_and_never_overwrite(tmp_path):
    path = tmp_path / 'snapshots' / 'memory.json'
    data = sample()
    assert snap.save(str(path), data) is True
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert snap.load(str(path), layer='memory') == data
    other = sample()
    other['values'] = {'different': True}
    assert snap.save(str(path), other) is False
    assert snap.load(str(path))['values'] == {'thp': {'enabled': 'madvise'}}
    assert sorted(os.listdir(str(path.parent))) == [snap.CREATED_MARKER, 'memory.json']


def test_save_marks_the_dirs_it_created_and_the_last_discard_removes_them(tmp_path):
    top = tmp_path / 'kvmlab'
    first, second = top / 'snapshots' / 'a.json', top / 'snapshots' / 'b.json'
    assert snap.save(str(first), sample()) is True
    marker = top / 'snapshots' / snap.CREATED_MARKER
    assert json.loads(marker.read_text()) == [str(top / 'snapshots'), str(top)]
    assert snap.save(str(second), sample()) is True
    assert json.loads(marker.read_text()) == [str(top / 'snapshots'), str(top)]  # written once, by the creator
    assert snap.discard(str(first)) is True
    assert sorted(os.listdir(str(top / 'snapshots'))) == [snap.CREATED_MARKER, 'b.json']
    assert snap.discard(str(second)) is True
    assert not top.exists()
    assert os.listdir(str(tmp_path)) == []


def test_discard_keeps_dirs_that_hold_something_else_or_existed(tmp_path):
    top = tmp_path / 'kvmlab'
    path = top / 'snapshots' / 'a.json'
    assert snap.save(str(path), sample())
    (top / 'status.json').write_text('{}')
    assert snap.discard(str(path)) is True
    assert not (top / 'snapshots').exists()  # created and empty: gone
    assert sorted(os.listdir(str(top))) == ['status.json']  # holds something else: stays
    other = tmp_path / 'existing'
    other.mkdir()
    assert snap.save(str(other / 'a.json'), sample())
    assert os.listdir(str(other)) == ['a.json']  # no marker in a directory that was there
    (other / 'operator.txt').write_text('x')
    assert snap.discard(str(other / 'a.json')) is True
    assert os.listdir(str(other)) == ['operator.txt']


@pytest.mark.parametrize('entries, text, expected', [
    (['.kvmlab-created-dirs'], '["/v/k/s", "/v/k"]', ['/v/k/s', '/v/k']),
    (['.kvmlab-created-dirs'], '["/v/k", "/v/k/s"]', ['/v/k/s', '/v/k']),
    (['.kvmlab-created-dirs', 'b.json'], '["/v/k/s"]', []),
    (['.kvmlab-created-dirs'], 'not json', []),
    (['.kvmlab-created-dirs'], '{"a": 1}', []),
    (['.kvmlab-created-dirs'], '["v/k/s"]', []),
    (['.kvmlab-created-dirs'], '["/v/k/s", "/etc"]', []),
    (['.kvmlab-created-dirs'], '["/v/k/s/deeper"]', []),
    (['.kvmlab-created-dirs'], '[1]', []),
])
def test_created_dirs_to_remove_rules(entries, text, expected):
    assert snap.created_dirs_to_remove('/v/k/s', entries, text) == expected


def test_save_keeps_existing_dir_mode(tmp_path):
    directory = tmp_path / 'snaps'
    directory.mkdir()
    os.chmod(str(directory), 0o750)
    assert snap.save(str(directory / 's.json'), sample())
    assert stat.S_IMODE(os.stat(str(directory)).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(str(directory / 's.json')).st_mode) == 0o600


def test_save_refuses_when_a_racing_writer_wins(tmp_path, monkeypatch):
    path = tmp_path / 's.json'
    real_link = os.link

    def racing_link(src, dst):
        with open(dst, 'w') as handle:
            handle.write('{"theirs": true}')
        return real_link(src, dst)
    monkeypatch.setattr(os, 'link', racing_link)
    assert snap.save(str(path), sample()) is False
    assert path.read_text() == '{"theirs": true}'
    assert os.listdir(str(tmp_path)) == ['s.json']


def test_load_missing_and_discard(tmp_path):
    path = tmp_path / 's.json'
    with pytest.raises(SnapshotError, match=r's.json: cannot read: No such file'):
        snap.load(str(path))
    path.write_text('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "la')
    with pytest.raises(SnapshotError, match=r's.json: truncated'):
        snap.load(str(path))
    assert snap.discard(str(path)) is True
    assert snap.discard(str(path)) is False


def test_load_migrates_a_release_1_memory_file(tmp_path):
    path = tmp_path / 'memory.json'
    path.write_text(json.dumps(MEMORY_V1))
    assert snap.load(str(path), layer='memory')['values']['ksm'] == {'run': '0'}


def test_read_records_reject_wrong_types(tmp_path):
    with pytest.raises(SnapshotError, match='not a regular file'):
        snap.read_file_record(str(tmp_path))
    f = tmp_path / 'f'
    f.write_text('')
    with pytest.raises(SnapshotError, match='not a directory'):
        snap.read_dir_record(str(f))
    assert snap.read_file_record(str(f / 'below'))['exists'] is False


def test_retire_check_predicts_what_retire_removes(tmp_path):
    top = tmp_path / 'kvmlab'
    path = top / 'snapshots' / 'a.json'
    made = tmp_path / 'etc' / 'made.d'
    plan = [{'action': 'rmdir_if_empty', 'path': str(made)}, {'action': 'keep', 'path': str(tmp_path / 'etc')}]
    assert snap.save(str(path), sample())
    made.mkdir(parents=True)
    (made / 'dropin.conf').write_text('x')
    (top / 'status.json').write_text('{}')
    # the status file stays: the parent is kept, the snapshot directory goes
    assert snap.retire(str(path), plan, check=True) == [str(top / 'snapshots')]
    # the drop-in and the status file are removed by the rollback first: everything goes
    gone = [str(made / 'dropin.conf'), str(top / 'status.json')]
    predicted = snap.retire(str(path), plan, check=True, gone=gone)
    assert predicted == [str(made), str(top / 'snapshots'), str(top)]  # deepest first
    assert path.exists() and made.exists()  # check changed nothing
    for name in gone:
        os.unlink(name)
    assert snap.retire(str(path), plan) == predicted
    assert sorted(os.listdir(str(tmp_path))) == ['etc']


def test_retire_of_one_of_two_snapshots_keeps_the_directory(tmp_path):
    first, second = tmp_path / 'k' / 's' / 'a.json', tmp_path / 'k' / 's' / 'b.json'
    assert snap.save(str(first), sample()) and snap.save(str(second), sample())
    assert snap.retire(str(first), check=True) == []
    assert snap.retire(str(first)) == []
    assert snap.retire(str(second), check=True) == [str(tmp_path / 'k' / 's'), str(tmp_path / 'k')]
    assert snap.retire(str(second)) == [str(tmp_path / 'k' / 's'), str(tmp_path / 'k')]


def test_missing_dirs_and_ancestors(tmp_path):
    base = str(tmp_path)
    assert snap.missing_dirs(base + '/a/b/') == [base + '/a', base + '/a/b']
    assert snap.missing_ancestors(base + '/a/b/f.json') == [base + '/a/b', base + '/a']
    os.makedirs(base + '/a')
    assert snap.missing_dirs(base + '/a/b') == [base + '/a/b']
    assert snap.missing_dirs(base + '/a') == [] and snap.missing_dirs('/') == []
    assert snap.missing_ancestors(base + '/a/f.json') == []
