import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import StatusError, verdict


def items(*states):
    return [{'name': 'item%d' % index, 'state': state} for index, state in enumerate(states)]


def test_all_applied():
    result = verdict(items('applied', 'applied', 'info'))
    assert result['verdict'] == 'applied' and result['counted'] == 2


def test_all_stock():
    assert verdict(items('stock', 'stock', 'info'))['verdict'] == 'stock'
    assert verdict([])['verdict'] == 'stock'


def test_mixed_names_what_is_off():
    result = verdict(items('applied', 'stock', 'drifted'))
    assert result['verdict'] == 'drifted'
    assert result['drifted'] == ['item2'] and result['stock'] == ['item1']
    assert result['summary'] == 'drifted: item2 not as intended; item1 still stock (1 of 3 items applied)'
    only_drift = verdict(items('applied', 'drifted', 'drifted'))
    assert only_drift['summary'] == 'drifted: item1, item2 not as intended (1 of 3 items applied)'
    only_stock = verdict(items('applied', 'stock'))
    assert only_stock['summary'] == 'drifted: item1 still stock (1 of 2 items applied)'


def test_labels():
    assert verdict(items('applied'), 'shared execution pool', 'stock', 'mixed')['verdict'] == 'shared execution pool'
    assert verdict(items('applied', 'stock'), 'shared execution pool', 'stock', 'mixed')['verdict'] == 'mixed'


@pytest.mark.parametrize('bad', ['x', [{'name': 'a'}], [{'name': 'a', 'state': 'weird'}], ['a']])
def test_bad_items(bad):
    with pytest.raises(StatusError, match='items'):
        verdict(bad)


def test_status_line():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import status_line
    line = status_line({'name': 'PID 1 affinity', 'state': 'applied', 'intended': '0-1', 'live': '0-1'})
    assert line.split() == ['applied', 'PID', '1', 'affinity', 'intended', '0-1;', 'live', '0-1']
    with pytest.raises(StatusError):
        status_line('x')
