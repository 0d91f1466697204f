"""Counts in messages: one image, two images."""

from bongard_system1.wording import counted, number


def test_counted_is_singular_for_one_only_and_groups_thousands():
    assert counted(1, "image") == "1 image"
    assert counted(0, "epoch") == "0 epochs"
    assert counted(4000, "image") == "4,000 images"
    assert counted(2, "patch", "patches") == "2 patches"
    assert counted(None, "image") == "? images"          # a record missing the count still prints


def test_number_groups_thousands_and_marks_an_unknown_count():
    assert number(3600) == "3,600" and number(12) == "12" and number(None) == "?" and number(0.5) == "0.5"
