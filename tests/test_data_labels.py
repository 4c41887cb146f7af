"""Labels CSV parsing, its errors, and stable categorical ids."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlatent import data
from jaxlatent.errors import DataError


def _csv(tmp_path, text, name="labels.csv"):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


def test_parse_types_and_lookup(tmp_path):
  path = _csv(tmp_path, "subject_id,group,age\ns1,HC,31\ns2,MS,\ns3,MS,47.5\n")
  t = data.load_labels(path, required_columns=["group"])
  assert t.id_column == "subject_id" and t.ids == ("s1", "s2", "s3")
  assert t.columns["group"].dtype.kind == "U"
  assert t.columns["age"].dtype == np.float64 and np.isnan(t.columns["age"][1])
  got = t.lookup(["s3", "s1", "s3"])
  np.testing.assert_array_equal(got["group"], ["MS", "HC", "MS"])
  np.testing.assert_array_equal(got["age"], [47.5, 31.0, 47.5])
  with pytest.raises(DataError, match=r"labels\.csv.*no row for subject 's9'"):
    t.lookup(["s1", "s9"])


def test_filename_column(tmp_path):
  path = _csv(tmp_path, "filename,group\n/data/sub-1.nii.gz,HC\nsub-2.nii,MS\n")
  t = data.load_labels(path)
  assert t.id_column == "filename" and t.ids == ("sub-1", "sub-2")


@pytest.mark.parametrize("text,pattern", [
    ("", "is empty"),
    ("subject_id,group\n", "no rows"),
    ("id,group\na,HC\n", "neither a 'subject_id' nor a 'filename'"),
    ("subject_id,age\na,3\n", "no column 'group'"),
    ("subject_id,group\na,HC\nb,MS\na,MS\n", "subject 'a' more than once"),
    ("subject_id,group\na,HC,extra\n", "line 2 has 3 fields"),
])
def test_csv_errors(tmp_path, text, pattern):
  path = _csv(tmp_path, text, "bad.csv")
  with pytest.raises(DataError, match=r"bad\.csv"):
    data.load_labels(path, required_columns=["group"])
  with pytest.raises(DataError, match=pattern):
    data.load_labels(path, required_columns=["group"])


def test_missing_csv(tmp_path):
  with pytest.raises(DataError, match=r"nope\.csv.*does not exist"):
    data.load_labels(str(tmp_path / "nope.csv"))


def test_categorical_ids_stable():
  ids, classes = data.categorical_to_ids(["MS", "HC", "MS", "HC"])
  assert classes == ["HC", "MS"]
  np.testing.assert_array_equal(ids, [1, 0, 1, 0])
  assert ids.dtype == np.int32
  ids2, _ = data.categorical_to_ids(["HC", "HC", "MS"][::-1])  # order of first sight irrelevant.
  np.testing.assert_array_equal(ids2, [1, 0, 0])
  ids3, classes3 = data.categorical_to_ids(["b", "a"], classes=["b", "a"])
  np.testing.assert_array_equal(ids3, [0, 1])
  with pytest.raises(DataError, match="'c' is not one of"):
    data.categorical_to_ids(["c"], classes=["a", "b"])
