import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError, canonical, format_cpulist, format_hexmask, from_cpumap, parse_cpulist,
    parse_hexmask, to_cpumap,
)


@pytest.mark.parametrize('text, cpus', [
    ('0-3,8', {0, 1, 2, 3, 8}),
    ('0-5, 24-29 48-53,72-77', set(range(0, 6)) | set(range(24, 30)) | set(range(48, 54)) | set(range(72, 78))),
    ('', set()),
    ('  \n', set()),
    ('7', {7}),
    ('0-15:2/4', {0, 1, 4, 5, 8, 9, 12, 13}),
    ('3,1,2,1', {1, 2, 3}),
])
def test_parse(text, cpus):
    assert parse_cpulist(text) == frozenset(cpus)


@pytest.mark.parametrize('text, message', [
    ('0-', 'cannot parse "0-"'),
    ('a', 'cannot parse "a"'),
    ('5-3', 'runs backwards'),
    ('0-99999999', 'beyond'),
    ('0-8:0/4', 'bad stride'),
    ('1.5', 'cannot parse'),
])
def test_parse_errors_name_the_text(text, message):
    with pytest.raises(CpuListError, match=message) as info:
        parse_cpulist(text, 'pools.guest_domain')
    assert 'pools.guest_domain' in str(info.value)


def test_parse_rejects_non_strings():
    with pytest.raises(CpuListError, match='must be a cpulist string'):
        parse_cpulist(None)
    with pytest.raises(CpuListError, match='must be a cpulist string'):
        parse_cpulist(True)
    with pytest.raises(CpuListError, match='not a CPU number'):
        parse_cpulist([1, -2])
    assert parse_cpulist([3, 1]) == frozenset({1, 3})
    assert parse_cpulist(4) == frozenset({4})


@pytest.mark.parametrize('cpus, text', [
    ([], ''),
    ([0], '0'),
    ([0, 1], '0-1'),
    ([5, 0, 1, 2, 7, 6], '0-2,5-7'),
    (range(1024), '0-1023'),
    ([0, 2, 4], '0,2,4'),
])
def test_format(cpus, text):
    assert format_cpulist(cpus) == text


def test_canonical_round_trip():
    assert canonical('72-77, 0-5,48-53,24-29') == '0-5,24-29,48-53,72-77'
    for text in ('0-5,24-29,48-53,72-77', '1,3,5-9', '0'):
        assert canonical(canonical(text)) == canonical(text)


def test_cpumap_round_trip():
    cpumap = to_cpumap({0, 2}, 4)
    assert cpumap == (True, False, True, False)
    assert from_cpumap(cpumap) == frozenset({0, 2})
    assert to_cpumap({7}, 4) == (False,) * 4


def test_hexmask():
    assert format_hexmask({0, 1, 40}) == '100,00000003'
    assert parse_hexmask('100,00000003') == frozenset({0, 1, 40})
    assert format_hexmask(set()) == '0'
    assert parse_hexmask(format_hexmask(range(96))) == frozenset(range(96))
    with pytest.raises(CpuListError, match='cannot parse hex mask'):
        parse_hexmask('xyz')
