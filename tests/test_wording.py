"""Counts in messages: one image, two images."""

from bongard_system1.wording import counted


def test_counted_is_singular_for_one_only_and_groups_thousands():
    assert counted(1, "image") == "1 image"
    assert counted(0, "epoch") == "0 epochs"
    assert counted(4000, "image") == "4,000 images"
    assert counted(2, "patch", "patches") == "2 patches"
    assert counted(None, "image") == "? images"          # a record missing the count still prints
