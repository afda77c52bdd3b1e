import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import (
    SizeError, format_size, parse_size,
)


@pytest.mark.parametrize('value, unit, expected', [
    ('16G', 'B', 16 * 1024 ** 3),
    ('16GiB', 'B', 16 * 1024 ** 3),
    ('512 MiB', 'B', 512 * 1024 ** 2),
    ('1.5G', 'B', int(1.5 * 1024 ** 3)),
    (24, 'MiB', 24 * 1024 ** 2),
    ('24', 'GiB', 24 * 1024 ** 3),
    (4096, 'B', 4096),
])
def test_parse_size(value, unit, expected):
    assert parse_size(value, default_unit=unit) == expected


@pytest.mark.parametrize('value', ['lots', '16X', '', '-1G', None, True, -5])
def test_parse_size_errors(value):
    with pytest.raises(SizeError) as info:
        parse_size(value, 'zram.size')
    assert 'zram.size' in str(info.value)


def test_format_size():
    assert format_size(16 * 1024 ** 3) == '16GiB'
    assert format_size(1536 * 1024 ** 2) == '1536MiB'
    assert format_size(1536 * 1024 ** 2 + 1) == '1.5GiB'
    assert format_size(100) == '100B'
