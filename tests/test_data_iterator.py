"""Deterministic, resumable batch order and per-host sharding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxlatent import data
from jaxlatent.errors import ConfigError


def _dataset(n=23, s=4):
  images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, s, s, 1), np.float32)
  return data.SliceDataset(
      images=images, masks=np.ones((n, s, s), np.uint8),
      subject_id=np.array([f"s{i % 5}" for i in range(n)]),
      source_file=np.array(["f.nii"] * n), slice_index=np.arange(n),
      slice_position=np.linspace(0, 1, n, dtype=np.float32),
      labels={"group": np.array(["MS" if i % 3 == 0 else "HC" for i in range(n)]),
              "age": np.arange(n, dtype=np.float64) + 0.5},
      subjects={f"s{i}": {"axis": "axial"} for i in range(5)})


def test_epochs_cover_every_example_once():
  n, b = 23, 5
  spe = data.steps_per_epoch(n, b)
  assert spe == 4  # 3 examples dropped per epoch.
  for epoch in range(3):
    idx = np.concatenate([data.batch_indices(n, b, 7, epoch * spe + i) for i in range(spe)])
    assert len(np.unique(idx)) == len(idx) == spe * b
    np.testing.assert_array_equal(idx, data.epoch_permutation(n, 7, epoch)[: spe * b])
  e0 = data.batch_indices(n, b, 7, 0)
  assert not np.array_equal(e0, data.batch_indices(n, b, 7, spe))  # reshuffled each epoch.
  assert not np.array_equal(e0, data.batch_indices(n, b, 8, 0))  # seed matters.
  np.testing.assert_array_equal(e0, data.batch_indices(n, b, 7, 0))  # pure.


def test_resume_reproduces_uninterrupted_run():
  ds = _dataset()
  full = list(itertools.islice(data.iterate_batches(ds, 4, seed=3, with_index=True), 17))
  for k in (0, 4, 5, 11):
    resumed = list(data.iterate_batches(ds, 4, seed=3, start_step=k, num_steps=17 - k,
                                        with_index=True))
    assert len(resumed) == 17 - k
    for a, b in zip(full[k:], resumed):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["index"], b["index"])
  for step, batch in enumerate(full):
    np.testing.assert_array_equal(batch["index"], data.batch_indices(len(ds), 4, 3, step))
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["index"])  # right rows.
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (4, 4, 4, 1)
    assert "label" not in batch


def test_hosts_partition_the_global_batch():
  ds = _dataset()
  glob = next(data.iterate_batches(ds, 6, seed=1, start_step=9, with_index=True))
  parts = [next(data.iterate_batches(ds, 6, seed=1, start_step=9, process_index=p,
                                     process_count=3, with_index=True)) for p in range(3)]
  for p in parts:
    assert p["image"].shape == (2, 4, 4, 1)
  np.testing.assert_array_equal(np.concatenate([p["index"] for p in parts]), glob["index"])
  np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), glob["image"])
  with pytest.raises(ConfigError, match="not divisible by process_count=4"):
    next(data.iterate_batches(ds, 6, seed=1, process_count=4))
  with pytest.raises(ConfigError, match="process_index=3"):
    data.host_slice(6, 3, 3)
  with pytest.raises(ConfigError, match="larger than the dataset"):
    data.steps_per_epoch(3, 4)


def test_labels_in_batches():
  ds = _dataset()
  batch = next(data.iterate_batches(ds, 8, seed=0, label_column="group", with_index=True))
  assert batch["label"].dtype == np.int32
  want = np.where(batch["index"] % 3 == 0, 1, 0)  # classes sorted: HC=0, MS=1.
  np.testing.assert_array_equal(batch["label"], want)
  with pytest.raises(ConfigError, match="non-integer"):
    next(data.iterate_batches(ds, 8, seed=0, label_column="age"))
  with pytest.raises(ConfigError, match="'nope'"):
    next(data.iterate_batches(ds, 8, seed=0, label_column="nope"))


def test_subset():
  ds = _dataset()
  sub = ds.subset([3, 1])
  assert len(sub) == 2 and sub.images[0, 0, 0, 0] == 3.0
  np.testing.assert_array_equal(sub.subject_id, ["s3", "s1"])
  assert set(sub.subjects) == {"s1", "s3"}
  np.testing.assert_array_equal(sub.labels["group"], ["MS", "HC"])
  assert len(ds.subset(ds.subject_id == "s0")) == 5
