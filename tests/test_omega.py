"""omega's initial value: the closed form, the published table, and input validation."""

import math

import pytest

from admin_fairseq.core import OUTPUT_CHANGE_SCALES, calculate_init, canonical_scale

# Known values (O(logn) / O(1)) computed from the formulas of the Admin paper / admin-torch.
PUBLISHED = {
    12: (2.0170, 3.4641),
    18: (2.3351, 4.2426),
    36: (3.0408, 6.0),
    120: (4.9224, 10.9545),
    180: (5.8153, 13.4164),
    300: (7.1931, 17.3205),
}


@pytest.mark.parametrize("n", sorted(PUBLISHED))
def test_matches_published_table(n):
    logn, const = PUBLISHED[n]
    assert calculate_init(n) == pytest.approx(logn, abs=5e-5)
    assert calculate_init(n, "O(logn)") == pytest.approx(logn, abs=5e-5)
    assert calculate_init(n, "O(1)") == pytest.approx(const, abs=5e-5)
    assert calculate_init(n, "O(n)") == 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12, 50, 199, 200, 300, 1000])
def test_closed_form(n):
    assert calculate_init(n, "O(logn)") ** 2 == pytest.approx((n + 1) / math.log(n + 1) - 1)
    assert calculate_init(n, "O(1)") ** 2 == pytest.approx(n)


def test_default_alias_and_ordering():
    for n in (2, 12, 300):
        assert calculate_init(n, "default") == calculate_init(n, "O(logn)")
        # more stability means a larger omega: O(n) < O(logn) < O(1) for N >= 2
        assert calculate_init(n, "O(n)") < calculate_init(n, "O(logn)") < calculate_init(n, "O(1)")
    assert canonical_scale("default") == "O(logn)"
    assert OUTPUT_CHANGE_SCALES == ("O(logn)", "O(1)", "O(n)")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "12", None])
def test_num_res_layers_rejected(bad):
    with pytest.raises(ValueError, match="num_res_layers must be"):
        calculate_init(bad)


@pytest.mark.parametrize("bad", ["O(log n)", "o(1)", "", None, 1])
def test_unknown_scale_rejected_with_allowed_values(bad):
    with pytest.raises(ValueError) as err:
        calculate_init(12, bad)
    message = str(err.value)
    assert "output_change_scale" in message
    for allowed in ("O(logn)", "O(1)", "O(n)", "default"):
        assert allowed in message


def test_scale_error_names_a_flag_when_asked():
    with pytest.raises(ValueError, match="--admin-output-change-scale must be one of"):
        canonical_scale("O(2)", "--admin-output-change-scale")
