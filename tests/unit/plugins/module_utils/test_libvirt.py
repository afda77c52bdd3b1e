# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure functions of module_utils/_libvirt.py: no libvirt needed."""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv

ONLINE = frozenset(range(4))
F = frozenset


def request(**kwargs):
    entry = {'name': 'vm1'}
    entry.update(kwargs)
    return lv.parse_request(entry, online=ONLINE)


def current(active=True, vcpus=2, iothreads=(1,), live_pin=None, config_pin=None, shares=1024,
            config_shares=0, partition=''):
    live_pin = F(ONLINE) if live_pin is None else live_pin
    state = {
        'active': active,
        'live': None,
        'live_default': None,
        'config_default': None,
        'config': {'vcpu_pins': dict((n, config_pin) for n in range(vcpus)), 'emulator_cpuset': config_pin,
                   'iothread_pins': dict((i, config_pin) for i in iothreads), 'cpu_shares': config_shares,
                   'partition': partition},
        'config_effective': {'vcpu_pins': dict((n, config_pin or F(ONLINE)) for n in range(vcpus)),
                             'emulator_cpuset': config_pin or F(ONLINE),
                             'iothread_pins': dict((i, config_pin or F(ONLINE)) for i in iothreads)},
    }
    if active:
        state['live'] = {'vcpu_pins': dict((n, live_pin) for n in range(vcpus)), 'emulator_cpuset': live_pin,
                         'iothread_pins': dict((i, live_pin) for i in iothreads), 'cpu_shares': shares,
                         'partition': partition or '/machine'}
    return state


# -- parse_pin / parse_request ---------------------------------------------------

def test_parse_pin_variants():
    assert lv.parse_pin('0-2,3', 'x', ONLINE) == F({0, 1, 2, 3})
    assert lv.parse_pin(' Unpinned ', 'x', ONLINE) == lv.UNPINNED
    assert lv.parse_pin(2, 'x', ONLINE) == F({2})


@pytest.mark.parametrize('value, words', [
    ('', ['empty']),
    (' , ', ['empty']),
    ('64', ['64', 'not online', '0-3']),
    ('0,7-8', ['7-8', 'not online']),
    ('3-1', ['backwards']),
    ('cpu0', ['cannot parse']),
])
def test_parse_pin_refuses(value, words):
    with pytest.raises(lv.RequestError) as err:
        lv.parse_pin(value, 'domain "vm1": vcpu_cpuset', ONLINE)
    for word in words:
        assert word in str(err.value)
    assert 'domain "vm1": vcpu_cpuset' in str(err.value)


def test_parse_request_defaults_and_overrides():
    req = lv.parse_request({'name': 'a', 'emulator_cpuset': '1'},
                           {'scope': 'config', 'vcpu_cpuset': '2-3', 'emulator_cpuset': '0'}, ONLINE)
    assert req['scope'] == 'config'
    assert req['vcpu_cpuset'] == F({2, 3})
    assert req['emulator_cpuset'] == F({1})
    assert req['iothread_cpuset'] is None
    assert lv.has_settings(req)
    assert not lv.has_settings(lv.parse_request({'name': 'a'}))


def test_parse_request_pin_dicts_take_string_keys():
    req = request(vcpu_pins={'0': '1', 3: 'unpinned'}, iothread_pins={'2': '0-1'})
    assert req['vcpu_pins'] == {0: F({1}), 3: lv.UNPINNED}
    assert req['iothread_pins'] == {2: F({0, 1})}


@pytest.mark.parametrize('entry, words', [
    ({'vcpu_pins': {'x': '1'}}, ['vcpu_pins', '"x"', 'not a number']),
    ({'vcpu_pins': {'-1': '1'}}, ['negative']),
    ({'vcpu_pins': {'1': '1', 1: '2'}}, ['twice']),
    ({'vcpu_pins': {'1': '9'}}, ['vcpu_pins[1]', '9']),
    ({'cpu_shares': 1}, ['cpu_shares 1', '2-262144']),
    ({'cpu_shares': 262145}, ['262145']),
    ({'cpu_shares': 0, 'scope': 'live'}, ['cpu_shares 0', 'persistent']),
    ({'partition': 'machine/gold'}, ['absolute']),
    ({'partition': '/machine/gold/'}, ['absolute']),
    ({'partition': '/machine/gold', 'scope': 'live'}, ['persistent only']),
    ({'scope': 'sometimes'}, ['scope must be']),
])
def test_parse_request_refuses(entry, words):
    with pytest.raises(lv.RequestError) as err:
        request(**entry)
    assert 'vm1' in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_parse_request_partition_values():
    assert request(partition='/machine/gold')['partition'] == '/machine/gold'
    assert request(partition='')['partition'] == ''
    assert request(cpu_shares=0)['cpu_shares'] == 0


# -- scopes -----------------------------------------------------------------------

@pytest.mark.parametrize('scope, active, expected', [
    ('auto', True, (True, True)),
    ('auto', False, (False, True)),
    ('both', True, (True, True)),
    ('live', True, (True, False)),
    ('config', True, (False, True)),
    ('config', False, (False, True)),
])
def test_resolve_scopes(scope, active, expected):
    assert lv.resolve_scopes(request(scope=scope), active) == expected


@pytest.mark.parametrize('scope', ['live', 'both'])
def test_resolve_scopes_stopped_live(scope):
    with pytest.raises(lv.RequestError) as err:
        lv.resolve_scopes(request(scope=scope), False)
    assert 'vm1' in str(err.value) and 'not running' in str(err.value)
    assert lv.resolve_scopes(request(scope=scope), False, 'skip') == (False, scope == 'both')


def test_resolve_scopes_shares_zero_on_running_auto():
    with pytest.raises(lv.RequestError):
        lv.resolve_scopes(request(cpu_shares=0), True)
    assert lv.resolve_scopes(request(cpu_shares=0), False) == (False, True)


def test_check_overlaps():
    lv.check_overlaps([('a', False, True), ('a', True, False), ('b', True, True)])
    with pytest.raises(lv.RequestError) as err:
        lv.check_overlaps([('a', True, True), ('a', False, True)])
    assert '"a"' in str(err.value) and 'config' in str(err.value)


# -- planning -----------------------------------------------------------------------

def items(changes):
    return sorted((c['scope'], c['item']) for c in changes)


def test_plan_everything_differs():
    changes = lv.plan_domain(request(vcpu_cpuset='2-3', emulator_cpuset='0', iothread_cpuset='1',
                                     cpu_shares=512, partition='/machine/gold'),
                             current(), ONLINE, True, True)
    assert items(changes) == sorted([
        ('live', 'vcpu_pins.0'), ('live', 'vcpu_pins.1'), ('live', 'iothread_pins.1'), ('live', 'emulator_cpuset'),
        ('live', 'cpu_shares'), ('config', 'vcpu_pins.0'), ('config', 'vcpu_pins.1'), ('config', 'iothread_pins.1'),
        ('config', 'emulator_cpuset'), ('config', 'cpu_shares'), ('config', 'partition')])


def test_plan_nothing_when_equal():
    state = current(live_pin=F({2, 3}), config_pin=F({2, 3}), shares=512, config_shares=512,
                    partition='/machine/gold')
    assert lv.plan_domain(request(vcpu_cpuset='2-3', cpu_shares=512, partition='/machine/gold'),
                          state, ONLINE, True, True) == []


def test_plan_unpinned_config_equal_to_effective_is_no_change():
    # config has no pins (effective: all CPUs); asking for all CPUs writes nothing
    assert lv.plan_domain(request(vcpu_cpuset='0-3'), current(), ONLINE, False, True) == []
    # ...while "unpinned" over an explicit pin removes it
    changes = lv.plan_domain(request(vcpu_cpuset='unpinned'), current(config_pin=F(ONLINE)), ONLINE, False, True)
    assert items(changes) == [('config', 'vcpu_pins.0'), ('config', 'vcpu_pins.1')]
    assert all(c['after'] is None for c in changes)


def test_plan_unpinned_live_goes_to_default():
    state = current(live_pin=F({1}))
    changes = lv.plan_domain(request(emulator_cpuset='unpinned'), state, ONLINE, True, False)
    assert [(c['item'], c['after']) for c in changes] == [('emulator_cpuset', ONLINE)]
    state['live_default'] = F({1})  # <vcpu cpuset='1'>
    assert lv.plan_domain(request(emulator_cpuset='unpinned'), state, ONLINE, True, False) == []


def test_plan_per_id_overrides_all():
    changes = lv.plan_domain(request(vcpu_cpuset='1', vcpu_pins={0: '0'}), current(vcpus=3), ONLINE, True, False)
    assert [(c['item'], c['after']) for c in changes] == [
        ('vcpu_pins.0', F({0})), ('vcpu_pins.1', F({1})), ('vcpu_pins.2', F({1}))]


@pytest.mark.parametrize('entry, words', [
    ({'vcpu_pins': {5: '0'}}, ['vcpu_pins', 'no vCPU 5', '0-1']),
    ({'iothread_pins': {3: '0'}}, ['iothread_pins', 'no IOThread 3']),
])
def test_plan_unknown_ids(entry, words):
    with pytest.raises(lv.RequestError) as err:
        lv.plan_domain(request(**entry), current(), ONLINE, True, True)
    for word in words:
        assert word in str(err.value)


def test_plan_shares_zero_removes_config_only():
    changes = lv.plan_domain(request(cpu_shares=0), current(active=False, config_shares=300), ONLINE, False, True)
    assert [(c['item'], c['before'], c['after']) for c in changes] == [('cpu_shares', 300, 0)]


def test_predict_after_and_pending_running():
    state = current()
    req = request(vcpu_cpuset='2', partition='/machine/gold')
    changes = lv.plan_domain(req, state, ONLINE, True, True)
    after = lv.predict_after(state, changes)
    assert after['live']['vcpu_pins'] == {0: F({2}), 1: F({2})}
    assert after['config']['vcpu_pins'] == {0: F({2}), 1: F({2})}
    assert after['config']['partition'] == '/machine/gold'
    assert state['config']['partition'] == ''  # the input is not modified
    assert lv.pending_items(req, after, True, changes) == ['partition']


def test_pending_config_only_on_running():
    state = current()
    req = request(scope='config', vcpu_cpuset='2')
    changes = lv.plan_domain(req, state, ONLINE, False, True)
    after = lv.predict_after(state, changes)
    assert lv.pending_items(req, after, True, changes) == ['vcpu_pins.0', 'vcpu_pins.1']


def test_pending_stopped():
    state = current(active=False)
    req = request(vcpu_cpuset='2', cpu_shares=100)
    changes = lv.plan_domain(req, state, ONLINE, False, True)
    after = lv.predict_after(state, changes)
    assert after['live'] is None
    assert lv.pending_items(req, after, False, changes) == ['cpu_shares', 'vcpu_pins.0', 'vcpu_pins.1']
    assert lv.pending_items(req, after, False, []) == []


def test_pending_default_partition_matches_live():
    state = current()
    req = request(partition='')
    assert lv.pending_items(req, lv.predict_after(state, []), True, []) == []


# -- formatting and snapshots -------------------------------------------------------------

def test_format_state_and_changes():
    state = current(config_pin=None)
    assert lv.format_state(state['config']) == {
        'vcpu_pins': {'0': 'unpinned', '1': 'unpinned'}, 'emulator_cpuset': 'unpinned',
        'iothread_pins': {'1': 'unpinned'}, 'cpu_shares': 0, 'partition': ''}
    assert lv.format_state(None) is None
    changes = lv.plan_domain(request(vcpu_pins={1: '0,2'}), current(), ONLINE, True, False)
    assert lv.format_changes(changes) == [{'scope': 'live', 'item': 'vcpu_pins.1', 'before': '0-3', 'after': '0,2'}]


def test_snapshot_round_trip():
    state = current(live_pin=F({1, 2}), config_pin=None, shares=700, config_shares=0)
    entries = lv.snapshot_entries('vm1', state)
    assert [e['scope'] for e in entries] == ['config', 'live']
    assert entries[0]['partition'] == '' and entries[0]['cpu_shares'] == 0
    assert entries[1]['cpu_shares'] == 700 and 'partition' not in entries[1]
    # the entries parse as requests and are no change against the same state
    for entry in entries:
        req = lv.parse_request(entry, online=ONLINE)
        live, config = lv.resolve_scopes(req, True)
        assert lv.plan_domain(req, state, ONLINE, live, config) == []
    assert [e['scope'] for e in lv.snapshot_entries('vm1', current(active=False))] == ['config']


# -- XML --------------------------------------------------------------------------------

XML = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <memory unit='KiB'>16384</memory>
  <vcpu placement='static' cpuset='0-1'>3</vcpu>
  <iothreads>2</iothreads>
  <cputune>
    <shares>512</shares>
    <vcpupin vcpu='0' cpuset='1'/>
    <vcpupin vcpu='2' cpuset='0-1'/>
    <emulatorpin cpuset='0'/>
    <iothreadpin iothread='2' cpuset='1'/>
  </cputune>
  <resource>
    <partition>/machine/gold</partition>
  </resource>
  <os><type arch='x86_64'>hvm</type></os>
  <qemu:commandline><qemu:arg value='-S'/></qemu:commandline>
</domain>
"""


def test_parse_domain_xml():
    parsed = lv.parse_domain_xml(XML)
    assert parsed['vcpus'] == 3
    assert parsed['default_cpuset'] == F({0, 1})
    assert parsed['iothread_ids'] == [1, 2]
    assert parsed['vcpu_pins'] == {0: F({1}), 2: F({0, 1})}
    assert parsed['emulator_cpuset'] == F({0})
    assert parsed['iothread_pins'] == {2: F({1})}
    assert parsed['cpu_shares'] == 512
    assert parsed['partition'] == '/machine/gold'
    empty = lv.parse_domain_xml("<domain><name>x</name><vcpu>1</vcpu></domain>")
    assert (empty['vcpu_pins'], empty['emulator_cpuset'], empty['cpu_shares'], empty['partition']) == ({}, None, 0, '')


def test_edit_domain_xml_removes_and_sets():
    edited = lv.edit_domain_xml(XML, remove_vcpupins={0}, remove_iothreadpins={2}, remove_shares=True,
                                partition='/machine/silver')
    parsed = lv.parse_domain_xml(edited)
    assert parsed['vcpu_pins'] == {2: F({0, 1})}
    assert parsed['iothread_pins'] == {}
    assert parsed['cpu_shares'] == 0
    assert parsed['emulator_cpuset'] == F({0})
    assert parsed['partition'] == '/machine/silver'
    assert 'xmlns:qemu=' in edited and '<qemu:commandline>' in edited  # prefixes kept


def test_edit_domain_xml_drops_empty_elements():
    edited = lv.edit_domain_xml(XML, remove_vcpupins={0, 2}, remove_emulatorpin=True, remove_iothreadpins={2},
                                remove_shares=True, partition='')
    assert '<cputune' not in edited and '<resource' not in edited
    assert lv.parse_domain_xml(edited)['partition'] == ''


def test_edit_domain_xml_adds_resource():
    edited = lv.edit_domain_xml("<domain><name>x</name><vcpu>1</vcpu><os/></domain>", partition='/machine/gold')
    assert '<vcpu>1</vcpu><resource><partition>/machine/gold</partition></resource><os' in edited
    unchanged = lv.edit_domain_xml("<domain><name>x</name></domain>")
    assert lv.parse_domain_xml(unchanged)['partition'] == ''


# -- writes, refusals and restore -------------------------------------------------------

class Refused(Exception):
    def __init__(self, msg, code=38):
        Exception.__init__(self, msg)
        self.code = code

    def get_error_message(self):
        return str(self)

    def get_error_code(self):
        return self.code


class RecordingDomain(object):
    """Records libvirt writes; refuses the calls named in ``refuse``."""

    def __init__(self, refuse=()):
        self.calls = []
        self.refuse = set(refuse)

    def _call(self, what, *args):
        if what in self.refuse:
            raise Refused('%s refused' % what)
        self.calls.append((what,) + args)

    def pinVcpuFlags(self, vcpu, cpumap, flags):  # noqa: N802
        self._call('vcpu%d' % vcpu, cpumap, flags)

    def pinEmulator(self, cpumap, flags):  # noqa: N802
        self._call('emulator', cpumap, flags)

    def pinIOThread(self, ident, cpumap, flags):  # noqa: N802
        self._call('iothread%d' % ident, cpumap, flags)

    def setSchedulerParametersFlags(self, params, flags):  # noqa: N802
        self._call('shares', params['cpu_shares'], flags)

    def XMLDesc(self, flags):  # noqa: N802
        return XML


class RecordingConn(object):
    def __init__(self, dom):
        self.dom = dom

    def defineXML(self, xml):  # noqa: N802
        self.dom._call('define', xml)


def _changes():
    req = request(vcpu_cpuset='2', emulator_cpuset='unpinned', cpu_shares=300, partition='/machine/gold')
    return lv.plan_domain(req, current(live_pin=F({1}), config_pin=F({1})), ONLINE, True, True)


def test_write_steps_describe_every_call_in_order():
    dom = RecordingDomain()
    steps = lv.write_steps(RecordingConn(dom), dom, _changes(), 4)
    assert [text for text, _call in steps] == [
        'cpu_shares (live) to 300', 'cpu_shares (config) to 300', 'emulator_cpuset (live) to "0-3"',
        'vcpu_pins.0 (live+config) to "2"', 'vcpu_pins.1 (live+config) to "2"',
        'persistent XML (config: remove emulator_cpuset, partition "/machine/gold")']
    assert dom.calls == []  # nothing is called while planning
    assert lv.apply_changes(RecordingConn(dom), dom, _changes(), 4) == 6
    assert [call[0] for call in dom.calls] == ['shares', 'shares', 'emulator', 'vcpu0', 'vcpu1', 'define']
    assert dom.calls[3] == ('vcpu0', (False, False, True, False), 3)


def test_apply_changes_names_the_refused_call_and_what_went_before():
    dom = RecordingDomain(refuse=['vcpu1'])
    with pytest.raises(lv.ApplyError) as info:
        lv.apply_changes(RecordingConn(dom), dom, _changes(), 4)
    assert info.value.step == 'vcpu_pins.1 (live+config) to "2"'
    assert info.value.done == ['cpu_shares (live) to 300', 'cpu_shares (config) to 300',
                               'emulator_cpuset (live) to "0-3"', 'vcpu_pins.0 (live+config) to "2"']
    assert isinstance(info.value.error, Refused)
    assert str(info.value) == 'vcpu_pins.1 (live+config) to "2": vcpu1 refused'
    assert 'define' not in [call[0] for call in dom.calls]


def test_restore_changes_are_the_snapshot_replayed():
    original = current(live_pin=F({0, 1, 2, 3}), shares=1024)
    fresh = current(live_pin=F({2}), config_pin=F({2}), shares=300, config_shares=300, partition='/machine/gold')
    fresh['live']['partition'] = '/machine'
    items = sorted((c['scope'], c['item'], lv.format_value(c['after']))
                   for c in lv.restore_changes('vm1', original, fresh, ONLINE))
    assert items == [
        ('config', 'cpu_shares', 0), ('config', 'emulator_cpuset', 'unpinned'),
        ('config', 'iothread_pins.1', 'unpinned'), ('config', 'partition', ''),
        ('config', 'vcpu_pins.0', 'unpinned'), ('config', 'vcpu_pins.1', 'unpinned'),
        ('live', 'cpu_shares', 1024), ('live', 'emulator_cpuset', '0-3'), ('live', 'iothread_pins.1', '0-3'),
        ('live', 'vcpu_pins.0', '0-3'), ('live', 'vcpu_pins.1', '0-3')]
    assert lv.restore_changes('vm1', original, original, ONLINE) == []
    # a domain stopped since: only its persistent part is restored
    stopped = dict(fresh, active=False, live=None)
    assert {c['scope'] for c in lv.restore_changes('vm1', original, stopped, ONLINE)} == {'config'}


# -- _libvirt_conn: import guard, connection, error translation -------------------------

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc  # noqa: E402


class FakeLib(object):
    libvirtError = Refused  # noqa: N815
    VIR_ERR_NONE = 0
    VIR_ERR_WARNING = 1
    VIR_ERR_ERROR = 2
    VIR_ERR_OK = 0
    VIR_ERR_INTERNAL_ERROR = 1
    VIR_ERR_SYSTEM_ERROR = 38
    VIR_ERR_NO_DOMAIN = 42

    def __init__(self, conn=None, fail=None):
        self.conn, self.fail, self.handlers = conn, fail, []

    def registerErrorHandler(self, handler, ctx):  # noqa: N802
        self.handlers.append(handler)

    def open(self, uri):
        if self.fail:
            raise self.fail
        return self.conn


class ClosingConn(object):
    def __init__(self, names=(), lookup_error=None):
        self.closed = 0
        self.names = names
        self.lookup_error = lookup_error

    def close(self):
        self.closed += 1
        raise RuntimeError('close errors are ignored')

    def lookupByName(self, name):  # noqa: N802
        if self.lookup_error:
            raise self.lookup_error
        if name not in self.names:
            raise Refused("Domain not found: no domain with matching name '%s'" % name, 42)
        return 'dom:' + name


class Stop(Exception):
    pass


def test_describe_gives_text_code_and_name():
    assert lc.describe(Refused('Unable to write', 38), FakeLib()) == 'Unable to write (libvirt error 38, VIR_ERR_SYSTEM_ERROR)'
    # levels share numbers with codes: 1 is VIR_ERR_INTERNAL_ERROR, not VIR_ERR_WARNING
    assert lc.describe(Refused('internal', 1), FakeLib()) == 'internal (libvirt error 1, VIR_ERR_INTERNAL_ERROR)'
    assert lc.describe(Refused('odd', 999), FakeLib()) == 'odd (libvirt error 999)'
    assert lc.describe(ValueError('plain')) == 'plain'
    assert lc.is_no_domain(Refused('x', 42)) and not lc.is_no_domain(Refused('x', 38))
    assert not lc.is_no_domain(ValueError('Domain not found'))


def test_connection_silences_errors_and_always_closes():
    conn = ClosingConn()
    lib = FakeLib(conn)
    with lc.connection(lib, 'qemu:///x', Stop) as opened:
        assert opened is conn and len(lib.handlers) == 1
        assert lib.handlers[0](None, 'err') is None
    assert conn.closed == 1
    with pytest.raises(KeyError):
        with lc.connection(lib, 'qemu:///x', Stop):
            raise KeyError('inside')
    assert conn.closed == 2


def test_connection_failures_name_the_uri():
    with pytest.raises(Stop, match=r'^cannot connect to libvirt at uri "qemu:///y": Failed to connect socket '
                                   r'\(libvirt error 38, VIR_ERR_SYSTEM_ERROR\)$'):
        with lc.connection(FakeLib(fail=Refused('Failed to connect socket', 38)), 'qemu:///y', Stop):
            pass
    with pytest.raises(Stop, match=r'^cannot connect to libvirt at uri "qemu:///z"$'):
        with lc.connection(FakeLib(None), 'qemu:///z', Stop):
            pass


def test_lookup_only_no_domain_is_missing():
    lib = FakeLib()
    assert lc.lookup_domain(lib, ClosingConn(['a']), 'a', 'qemu:///x', Stop) == 'dom:a'
    assert lc.lookup_domain(lib, ClosingConn(['a']), 'b', 'qemu:///x', Stop) is None
    dropped = ClosingConn(lookup_error=Refused('Cannot recv data: Connection reset by peer', 38))
    with pytest.raises(Stop, match=r'^domain "a": lookup at uri "qemu:///x" failed: Cannot recv data: Connection '
                                   r'reset by peer \(libvirt error 38, VIR_ERR_SYSTEM_ERROR\)$'):
        lc.lookup_domain(lib, dropped, 'a', 'qemu:///x', Stop)


def test_require_fails_with_the_missing_library_message():
    class Module(object):
        failed = None

        def fail_json(self, **kwargs):
            self.failed = kwargs
    module = Module()
    lc.require(module, FakeLib())
    assert module.failed is None
    lc.require(module, None)
    assert 'libvirt-python' in module.failed['msg']


# -- where a new top-level element goes in a domain ---------------------------

def _root(*tags):
    import xml.etree.ElementTree as ET
    root = ET.Element('domain')
    for tag in tags:
        ET.SubElement(root, tag)
    return root


@pytest.mark.parametrize('tags, tag, index', [
    ((), 'cpu', 0),                                                    # an empty domain: first
    (('devices',), 'metadata', 0),                                     # nothing libvirt writes before it: first
    (('name', 'uuid', 'memory', 'vcpu', 'os', 'devices'), 'metadata', 2),  # after name and uuid
    (('name', 'uuid', 'memory', 'vcpu', 'os', 'devices'), 'resource', 4),  # after vcpu, before os
    (('name', 'memory', 'vcpu', 'cputune', 'os', 'features', 'devices'), 'cpu', 6),  # after features
    (('name', 'os', 'memory', 'devices'), 'resource', 3),              # after the last earlier one, wherever it is
    (('name', 'devices', 'cputune'), 'numatune', 3),
])
def test_child_insert_index_follows_libvirts_element_order(tags, tag, index):
    assert lv.child_insert_index(_root(*tags), tag) == index


def test_child_insert_index_knows_only_the_domain_elements_up_to_cpu():
    with pytest.raises(ValueError):
        lv.child_insert_index(_root('name'), 'devices')
