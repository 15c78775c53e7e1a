import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.units import FieldError, from_micro, to_micro


@pytest.mark.parametrize(
    ("text", "micro"),
    [("1.85", 1_850_000), ("0.000001", 1), ("2", 2_000_000), ("10.5", 10_500_000), ("0.1", 100_000)],
)
def test_decimal_strings_convert_exactly(text, micro):
    assert to_micro(text, "price") == micro


@pytest.mark.parametrize("text", ["1.0000001", "0.00000001"])
def test_more_precision_than_a_micro_yuan_is_refused(text):
    with pytest.raises(FieldError) as error:
        to_micro(text, "price")
    assert (error.value.field, error.value.code) == ("price", "too_precise")


@pytest.mark.parametrize("text", ["", "abc", "-1", "+1", "1e3", "01.5", " 1", "1.", ".5", "0", "0.000000", "NaN"])
def test_anything_but_a_positive_plain_decimal_is_refused(text):
    with pytest.raises(FieldError) as error:
        to_micro(text, "budget")
    assert (error.value.field, error.value.code) == ("budget", "invalid_decimal")


@given(st.integers(min_value=1, max_value=10**20))
def test_formatting_round_trips(micro):
    assert to_micro(from_micro(micro), "amount") == micro


def test_formatting_drops_trailing_zeros_and_keeps_signs():
    assert [from_micro(v) for v in (1_850_000, 2_000_000, 1, 0, -500_000)] == ["1.85", "2", "0.000001", "0", "-0.5"]
